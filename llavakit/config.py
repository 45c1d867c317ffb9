"""Typed configuration: what a model is made of, what data it reads, how a stage trains.

Recipes are YAML files with three sections (`model`, `data`, `train`) mapped onto these dataclasses;
any field can be overridden from the command line as `section.field=value`. Unknown keys are errors
that name the key and the known ones, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class HighresSettings:
    """LLaVAR's high-resolution variant: a second vision encoder reads a grid of crops of the image
    and its patch features are the keys/values of cross-attention blocks placed after
    self-attention in decoder layers. The main tower and its projected tokens are unchanged."""

    grid: int = 4
    """Crops per side of the high-resolution view: the image, padded to a square, is resized to
    `grid` times the encoder's input size and cut into grid x grid crops (4 x 224 px = 896 px)."""
    encoder: str | None = None
    """Folder of the CLIP/SigLIP checkpoint that encodes the crops; None = a copy of the main
    vision tower. It must normalise pixels as the main tower does (all CLIP towers do)."""
    select_layer: int = -2
    """Hidden-state index of the high-resolution encoder whose patch features are used."""
    layers: list[int] | None = None
    """Decoder layers (0-based) that get a cross-attention block; None = every `every`-th layer
    from layer 0. A built model records the resolved list."""
    every: int = 1
    """With `layers` unset: blocks in layers 0, every, 2 * every, ..."""
    num_heads: int | None = None
    """Cross-attention heads; None = the language model's own attention head count."""


@dataclass
class ModelConfig:
    """The architecture of a LLaVA model; saved inside every checkpoint so it can be rebuilt."""

    vision_tower: str = ""
    """Folder of a Hugging Face CLIP or SigLIP checkpoint (full model or vision-only)."""
    language_model: str = ""
    """Folder of a Hugging Face causal language model (Llama, Vicuna, Qwen2, GPT-2, ...)."""
    tokenizer: str | None = None
    """Tokenizer folder; defaults to the language model's folder."""
    projector_type: str = "mlp2x_gelu"
    """`linear` (LLaVA), `mlp{N}x_gelu` (LLaVA-1.5 uses mlp2x_gelu) or `identity`."""
    vision_select_layer: int = -2
    """Hidden-state index of the vision tower whose features are used (-2 = penultimate layer)."""
    vision_select_feature: str = "patch"
    """`patch` drops the CLS token, `cls_patch` keeps it."""
    use_im_start_end: bool = False
    """Wrap each image's features in learned <im_start>/<im_end> tokens (LLaVA v1; off in 1.5)."""
    image_aspect_ratio: str = "pad"
    """`pad` to a square with the mean colour (1.5), `crop` (resize + centre crop), `resize`, `anyres` (NeXT)."""
    image_grid_pinpoints: Any = None
    """AnyRes candidate resolutions: a list of [height, width] or a range string like "(1x1),...,(2x2)"."""
    anyres_max_patches: int | None = None
    """AnyRes cap N of LLaVA-OneVision's anyres_max_N: grids holding more than N tiles' worth of
    patches are downsampled to about that many."""
    template: str = "vicuna_v1"
    """Conversation template name (see `llavakit.conversation.template_names()`)."""
    max_length: int = 2048
    """Maximum sequence length in tokens, image features included; longer samples are truncated."""
    dtype: str = "float32"
    """Weights dtype when loading: float32, bfloat16 or float16."""
    attn_implementation: str = "sdpa"
    """Attention kernel for the language model: sdpa, eager or flash_attention_2."""
    load_in_bits: int | None = None
    """Load the language model quantised to 4 or 8 bits through bitsandbytes (GPU only, for QLoRA)."""
    highres: HighresSettings | None = None
    """LLaVAR's high-resolution branch (cross-attention to a second encoder's crop features);
    None for plain LLaVA."""


@dataclass
class DataSource:
    """One data file of a training mixture."""

    path: str = ""
    """LLaVA JSON (a list of records) or JSONL file."""
    image_folder: str | None = None
    """Folder the records' `image` paths are relative to; defaults to `data.image_folder`."""
    weight: float = 1.0
    """Sampling weight: 1.0 uses each record once per epoch, 0.5 half of them, 2.0 twice."""


@dataclass
class DataConfig:
    """What a stage trains on."""

    train: list[DataSource] = field(default_factory=list)
    """Training files; several files make a mixture."""
    image_folder: str = "."
    """Default image folder for every source."""
    skip_bad_records: bool = False
    """Skip invalid records (reporting the count) instead of refusing to train."""
    group_by_modality_length: bool = False
    """Batch image and text-only samples apart, sorted by length within mega-batches (LLaVA-1.5)."""
    num_workers: int = 0
    """DataLoader worker processes."""
    feature_cache: str | None = None
    """Folder for cached vision-tower features (frozen tower only): each image's selected
    features are computed once, stored as sharded safetensors keyed by image content, tower
    weights, select layer/feature and preprocessing, and fed instead of pixels."""


@dataclass
class LoraSettings:
    """LoRA on the language model (peft); the projector stays fully trained."""

    r: int = 128
    alpha: int = 256
    dropout: float = 0.05
    target_modules: list[str] | None = None
    """Module names to adapt; default = every linear layer of the language model except the head."""
    merge_on_save: bool = True
    """Merge the adapters into the weights for the final checkpoint (loadable anywhere)."""


@dataclass
class TrainConfig:
    """How one training stage runs; the fields map onto transformers' TrainingArguments."""

    stage: str = "instruct"
    """`align` (projector only, LLaVA stage 1) or `instruct` (projector + LLM, stage 2)."""
    output_dir: str = "runs/train"
    """Where checkpoints, logs and the final model go."""
    init_from: str | None = None
    """A previous stage's llavakit checkpoint to start from (stage 2 loads stage 1's projector)."""
    epochs: float = 1.0
    max_steps: int = -1
    """Stop after this many optimiser steps (overrides epochs when > 0)."""
    time_budget_s: float | None = None
    """Stop after this many seconds of training even if steps remain; the learning-rate
    schedule then follows whichever of steps or time is further along, so a run cut short by
    the clock still ends on a decayed learning rate."""
    per_device_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-5
    projector_lr: float | None = None
    """Separate learning rate for the projector (LoRA recipes use 2e-5 while LoRA uses 2e-4)."""
    tune_vision_tower: bool = False
    """Also train the vision tower (off in the papers)."""
    vision_lr: float | None = None
    """Learning rate for the vision tower when it is trained."""
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    lr_scheduler: str = "cosine"
    precision: str = "fp32"
    """fp32, bf16 or fp16 mixed precision."""
    gradient_checkpointing: bool = False
    lora: LoraSettings | None = None
    """Enable LoRA on the language model (instruct stage)."""
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int | None = 2
    seed: int = 42
    deepspeed: str | None = None
    """Path to a DeepSpeed JSON config (see llavakit/train/configs/)."""
    fsdp_config: str | None = None
    """Path to an FSDP2 JSON config as transformers 5.x reads it (setting it selects FSDP; see
    llavakit/train/configs/fsdp.json); keys the installed transformers ignores are refused."""
    report_to: list[str] = field(default_factory=list)
    """Loggers: tensorboard, wandb, ..."""
    resume: bool = True
    """Continue from the newest checkpoint in output_dir if there is one."""
    save_frozen: str = "auto"
    """Final checkpoint: `copy` every component, `reference` frozen ones by path, `auto` = reference in align."""
    torch_compile: bool = False
    """Compile the model with torch.compile (transformers' Trainer does the wrapping)."""
    packing: bool = False
    """Pack each batch's samples, with their images, into as few rows as fit `packing_length`
    (first-fit decreasing); attention stays inside each sample, the loss is unchanged."""
    packing_length: int | None = None
    """Tokens per packed row; defaults to model.max_length. Longer rows mean fewer rows; with
    SDPA/eager attention each row costs its full length squared, with flash attention it does not."""
    trained_logits_only: bool = True
    """Compute vocabulary logits only where a token is trained (same loss, less time and memory;
    image placeholders, prompts and padding get none)."""
    loss_chunk_tokens: int | None = 4096
    """With trained_logits_only: project that many trained tokens to the vocabulary at a time,
    recomputing each chunk in backward, so at most chunk x vocab float32 logits exist at once
    (Llama/Mistral/Qwen2/Qwen3/GPT-2/Phi-3 heads; other LMs keep the one-shot projection).
    None = one shot."""


@dataclass
class RecipeConfig:
    """A whole training stage: model, data and schedule."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the annotated type, or raise ConfigError naming `where`."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(annotation, value, where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_type,) = args or (Any,)
        return [_coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            number = float(value) if annotation is float else int(str(value), 0)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}") from None
        return number
    if annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def from_dict(cls, data: dict[str, Any], where: str = "config"):
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    hints = _field_types(cls)
    values = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**values)


def to_dict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.learning_rate=1e-3` -> (["train", "learning_rate"], 0.001) with YAML value parsing."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.field=value")
    key, raw = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw) if raw != "" else ""


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted overrides to a nested mapping (before it becomes dataclasses)."""
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {part} is not a section")
        node[path[-1]] = value
    return data


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> RecipeConfig:
    """Read a YAML recipe and apply command-line overrides."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with model/data/train sections")
    data = apply_overrides(data, overrides or [])
    return from_dict(RecipeConfig, data, where=str(path))


def save_recipe(config: RecipeConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
