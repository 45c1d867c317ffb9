"""Checkpoints of the original LLaVA repository: import them, and rebuild them from weight deltas.

The original layout is an LLM checkpoint (LlavaLlamaForCausalLM, LlavaMistralForCausalLM, ...)
whose config.json carries extra `mm_*` keys and whose weights mix the projector
(`model.mm_projector.{0,2}.*`), sometimes the vision tower (`model.vision_tower.vision_tower.*`)
and the AnyRes `model.image_newline` into the LLM's own tensors. Stage 1 saves only
`mm_projector.bin`. The vision tower is named by hub id (`mm_vision_tower`); here it comes from a
local folder given by the caller, since nothing is downloaded.

LLaVA v1 and LLaVAR released weight *deltas* (target = base LLaMA + delta); `apply_delta` rebuilds
the original-layout folder that `import_llava` then reads.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llavakit.config import ModelConfig
from llavakit.model.convert import (
    PICKLE_INDEX,
    SAFETENSORS_INDEX,
    ConversionError,
    ConversionReport,
    WeightFolder,
    copy_tokenizer_files,
    has_tokenizer,
    load_weight_file,
    weight_files,
    write_shards,
)
from llavakit.model.io import assemble, save_checkpoint
from llavakit.model.llava import LlavaModel
from llavakit.model.towers import SELECT_FEATURES

# Original model_type / architecture -> the transformers model_type of the language model.
_ORIGINAL_MODEL_TYPES = {
    "llava": "llama",
    "llava_llama": "llama",
    "llava_mistral": "mistral",
    "llava_mixtral": "mixtral",
    "llava_qwen": "qwen2",
}
_ORIGINAL_ARCHITECTURES = {
    "LlavaLlamaForCausalLM": "llama",
    "LlavaMistralForCausalLM": "mistral",
    "LlavaMixtralForCausalLM": "mixtral",
    "LlavaQwenForCausalLM": "qwen2",
}
# Training-time keys the original code adds to the LLM config (besides every `mm_*` key).
_LLAVA_CONFIG_KEYS = frozenset(
    {
        "image_aspect_ratio",
        "image_grid_pinpoints",
        "image_crop_resolution",
        "image_split_resolution",
        "tokenizer_model_max_length",
        "tokenizer_padding_side",
        "freeze_mm_mlp_adapter",
        "tune_mm_mlp_adapter",
        "unfreeze_mm_vision_tower",
        "pretrain_mm_mlp_adapter",
        "use_mm_proj",
    }
)
_PROJECTOR_MARK = "mm_projector."
_TOWER_PREFIX = "model.vision_tower.vision_tower."
_NEWLINE_KEY = "model.image_newline"
_ANYRES = re.compile(r"^anyres(?:_max_(\d+))?$")
_PROJECTOR_FILES = ("mm_projector.safetensors", "mm_projector.bin")


@dataclass
class OriginalSettings:
    """The `mm_*` settings of an original LLaVA config, in llavakit's terms."""

    vision_tower_name: str | None
    """Hub id the model was trained with (mm_vision_tower); informational only."""
    projector_type: str | None
    """mm_projector_type; None when the config does not say (inferred from the weights)."""
    vision_hidden_size: int | None
    select_layer: int
    select_feature: str
    use_im_start_end: bool
    image_aspect_ratio: str
    grid_pinpoints: Any
    anyres_max_patches: int | None
    max_length: int | None


def read_original_settings(config: dict, where: str) -> OriginalSettings:
    """Translate the original config's LLaVA keys; refuse what llavakit cannot reproduce."""
    aspect = config.get("image_aspect_ratio") or "square"
    pinpoints, max_patches = config.get("image_grid_pinpoints"), None
    anyres = _ANYRES.match(aspect)
    if anyres:
        merge = config.get("mm_patch_merge_type", "flat")
        if not str(merge).startswith("spatial_unpad"):
            raise ConversionError(
                f"{where}: AnyRes with mm_patch_merge_type {merge!r}; llavakit packs AnyRes "
                "features as 'spatial_unpad' (unpadded grid + newline per row) only"
            )
        max_patches = int(anyres.group(1)) if anyres.group(1) else None
        if isinstance(pinpoints, list):
            # The original code reads each pinpoint as (width, height); llavakit uses
            # (height, width) like transformers, so the pairs are swapped.
            pinpoints = [[pair[1], pair[0]] for pair in pinpoints]
        aspect = "anyres"
    elif aspect == "pad":
        pass
    elif aspect == "square":
        aspect = "crop"  # the original passes images straight to CLIP: shortest edge + centre crop
    else:
        raise ConversionError(f"{where}: unsupported image_aspect_ratio {aspect!r}")
    feature = config.get("mm_vision_select_feature", "patch")
    if feature not in SELECT_FEATURES:
        raise ConversionError(f"{where}: unsupported mm_vision_select_feature {feature!r}")
    return OriginalSettings(
        vision_tower_name=config.get("mm_vision_tower"),
        projector_type=config.get("mm_projector_type"),
        vision_hidden_size=config.get("mm_hidden_size"),
        select_layer=int(config.get("mm_vision_select_layer", -2)),
        select_feature=feature,
        use_im_start_end=bool(config.get("mm_use_im_start_end", False)),
        image_aspect_ratio=aspect,
        grid_pinpoints=pinpoints if aspect == "anyres" else None,
        anyres_max_patches=max_patches,
        max_length=config.get("tokenizer_model_max_length"),
    )


def plain_llm_config(config: dict, where: str) -> dict:
    """The LLM's own config: LLaVA keys removed, model_type the transformers one."""
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    if architectures and architectures[0] in _ORIGINAL_ARCHITECTURES:
        model_type = _ORIGINAL_ARCHITECTURES[architectures[0]]
    elif model_type in _ORIGINAL_MODEL_TYPES:
        model_type = _ORIGINAL_MODEL_TYPES[model_type]
    elif not model_type or model_type.startswith("llava"):
        known = ", ".join(sorted(_ORIGINAL_ARCHITECTURES))
        raise ConversionError(
            f"{where}: cannot tell the language model of model_type {model_type!r} / "
            f"architectures {architectures}; supported: {known}"
        )
    plain = {
        key: value
        for key, value in config.items()
        if not key.startswith("mm_") and key not in _LLAVA_CONFIG_KEYS and key != "architectures"
    }
    plain["model_type"] = model_type
    return plain


def infer_projector_type(state: dict[str, torch.Tensor], where: str) -> str:
    """linear (`weight`, `bias`) or mlp{N}x_gelu (Linear layers at indices 0, 2, ...)."""
    names = set(state)
    if names == {"weight", "bias"}:
        return "linear"
    indices = sorted({int(name.split(".")[0]) for name in names if name.split(".")[0].isdigit()})
    if indices and indices == list(range(0, 2 * len(indices), 2)):
        expected = {f"{i}.{p}" for i in indices for p in ("weight", "bias")}
        if names == expected:
            return f"mlp{len(indices)}x_gelu"
    raise ConversionError(
        f"{where}: projector weights {sorted(names)[:6]} are neither linear nor mlpNx_gelu"
    )


def _find_projector(
    source: Path, projector: Path | None, weights: WeightFolder | None
) -> tuple[dict[str, torch.Tensor], str]:
    """Projector tensors (names relative to the projector) and where they came from."""
    if projector is None and weights is not None:
        keys = [k for k in weights.keys() if _PROJECTOR_MARK in k]
        if keys:
            state = {k.split(_PROJECTOR_MARK, 1)[1]: weights.get(k) for k in keys}
            return state, str(weights.folder)
    if projector is None:
        projector = next((source / n for n in _PROJECTOR_FILES if (source / n).is_file()), None)
    if projector is None:
        raise ConversionError(
            f"no projector weights: {source} has no model.mm_projector.* tensors and no "
            f"{' or '.join(_PROJECTOR_FILES)}; name the file with --projector"
        )
    raw = load_weight_file(projector)
    state = {k.split(_PROJECTOR_MARK, 1)[1]: v for k, v in raw.items() if _PROJECTOR_MARK in k}
    if not state:
        raise ConversionError(f"{projector} has no mm_projector.* tensors")
    return state, str(projector)


def _is_llm_key(key: str) -> bool:
    return _PROJECTOR_MARK not in key and not key.startswith(_TOWER_PREFIX) and key != _NEWLINE_KEY


def _stage_language_model(weights: WeightFolder, config: dict, source: Path, folder: Path) -> None:
    """Write the LLM tensors (LLaVA's own removed) as a plain HF folder, one input file at a time."""
    groups = [[k for k in keys if _is_llm_key(k)] for keys in weights.keys_by_file().values()]
    groups = [g for g in groups if g]
    if not groups:
        raise ConversionError(f"{weights.folder} holds no language-model weights")
    write_shards(folder, ({k: weights.get(k) for k in g} for g in groups), len(groups))
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    if (source / "generation_config.json").is_file():
        shutil.copy2(source / "generation_config.json", folder / "generation_config.json")


def _load_extras(model: LlavaModel, weights: WeightFolder | None, projector: dict, where: str):
    """Projector, and when the checkpoint has them, tower weights and the AnyRes newline."""
    try:
        model.projector.load_state_dict(projector)
    except RuntimeError as error:
        raise ConversionError(f"{where}: projector weights do not fit: {error}") from None
    if weights is None:
        return []
    notes = []
    tower_keys = [k for k in weights.keys() if k.startswith(_TOWER_PREFIX)]
    if tower_keys:
        encoder = model.vision_tower.encoder
        nested = any(k.startswith("vision_model.") for k in encoder.state_dict())
        state = {}
        for key in tower_keys:
            name = key[len(_TOWER_PREFIX) :]
            state[name if nested else name.removeprefix("vision_model.")] = weights.get(key)
        try:
            encoder.load_state_dict(state)
        except RuntimeError as error:
            raise ConversionError(f"{where}: vision tower weights do not fit: {error}") from None
        notes.append(f"the checkpoint's own vision tower weights ({len(state)} tensors) were used")
    if model.image_newline is not None:
        if _NEWLINE_KEY not in weights:
            raise ConversionError(f"{where}: AnyRes checkpoint without {_NEWLINE_KEY}")
        model.image_newline.data.copy_(weights.get(_NEWLINE_KEY))
    return notes


def import_llava(
    source: str | Path,
    out: str | Path,
    vision_tower: str | Path,
    llm: str | Path | None = None,
    projector: str | Path | None = None,
    template: str = "vicuna_v1",
) -> ConversionReport:
    """Read an original-layout LLaVA checkpoint into a llavakit checkpoint.

    source: the folder whose config.json has the `mm_*` keys (a full checkpoint, or stage 1's
    output folder with mm_projector.safetensors). llm: the base LLM folder when `source` holds only
    the projector. projector: an explicit projector file (.safetensors). Pickled weights (the
    original repository's `.bin` files) are refused with the `llavakit convert-bin` command that
    rewrites them.
    vision_tower: local CLIP/SigLIP folder standing in for the hub id in mm_vision_tower.
    """
    source, out = Path(source), Path(out)
    config_path = source / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{source} has no config.json")
    original = json.loads(config_path.read_text())
    settings = read_original_settings(original, str(config_path))
    llm_folder = Path(llm) if llm else source
    llm_config_path = llm_folder / "config.json"
    if not llm_config_path.is_file():
        raise FileNotFoundError(f"{llm_folder} has no config.json")
    llm_config = plain_llm_config(json.loads(llm_config_path.read_text()), str(llm_config_path))
    notes = []
    if settings.vision_tower_name:
        notes.append(
            f"trained with vision tower {settings.vision_tower_name!r}; using {vision_tower}"
        )
    if llm is None and not weight_files(source):
        raise ConversionError(
            f"{source} holds no language-model weights; for stage 1's projector-only output "
            "name the base LLM folder with --llm"
        )
    weights = WeightFolder(llm_folder)
    own = weights
    if llm is not None:  # stage 1's output folder may hold nothing but mm_projector.*
        own = WeightFolder(source) if weight_files(source) else None
    projector_state, projector_from = _find_projector(
        source, Path(projector) if projector else None, own
    )
    inferred = infer_projector_type(projector_state, projector_from)
    if settings.projector_type not in (None, inferred):
        raise ConversionError(
            f"{config_path}: mm_projector_type {settings.projector_type!r} but the weights in "
            f"{projector_from} form a {inferred!r} projector"
        )
    tokenizer_folder = next((f for f in (source, llm_folder) if has_tokenizer(f)), None)
    if tokenizer_folder is None:
        raise ConversionError(f"neither {source} nor {llm_folder} has tokenizer files")
    dtype = str(original.get("torch_dtype") or original.get("dtype") or "float32")
    config = ModelConfig(
        projector_type=inferred,
        vision_select_layer=settings.select_layer,
        vision_select_feature=settings.select_feature,
        use_im_start_end=settings.use_im_start_end,
        image_aspect_ratio=settings.image_aspect_ratio,
        image_grid_pinpoints=settings.grid_pinpoints,
        anyres_max_patches=settings.anyres_max_patches,
        template=template,
        dtype=dtype if dtype in ("float32", "bfloat16", "float16") else "float32",
        **({"max_length": settings.max_length} if settings.max_length else {}),
    )
    staging = out / ".import-staging"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        _stage_language_model(weights, llm_config, llm_folder, staging / "language_model")
        copy_tokenizer_files(tokenizer_folder, staging / "tokenizer")
        model, processor = assemble(
            config, vision_tower, staging / "language_model", staging / "tokenizer", vision_tower
        )
        if settings.vision_hidden_size not in (None, model.vision_tower.hidden_size):
            raise ConversionError(
                f"{config_path}: mm_hidden_size {settings.vision_hidden_size} but the vision "
                f"tower {vision_tower} has width {model.vision_tower.hidden_size}"
            )
        notes += _load_extras(model, own, projector_state, projector_from)
        save_checkpoint(model, processor, out, metadata={"imported_from": str(source.resolve())})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ConversionReport(out, notes)


# ---- weight deltas -------------------------------------------------------------------------------
def _merge(name: str, base: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """base + delta; where the delta is larger (resized embeddings) its extra rows are kept."""
    if base.shape == delta.shape:
        return (base.float() + delta.float()).to(delta.dtype)
    if base.dim() != delta.dim() or any(b > d for b, d in zip(base.shape, delta.shape)):
        raise ConversionError(
            f"tensor {name}: base shape {tuple(base.shape)} does not fit delta shape "
            f"{tuple(delta.shape)}"
        )
    merged = delta.float().clone()
    merged[tuple(slice(0, size) for size in base.shape)] += base.float()
    return merged.to(delta.dtype)


def apply_delta(base: str | Path, delta: str | Path, out: str | Path) -> ConversionReport:
    """Rebuild released weights: target = base + delta for every base tensor.

    Tensors only in the delta (projector, new tokens' rows beyond the base vocabulary) are taken
    as they are. The output is an original-layout LLaVA folder (the delta's config and tokenizer,
    merged safetensors) for `import_llava`. Every base tensor must appear in the delta: a delta
    made from another base would silently give garbage otherwise.
    """
    base, delta, out = Path(base), Path(delta), Path(out)
    base_weights = WeightFolder(base)
    delta_weights = WeightFolder(delta)
    missing = [key for key in base_weights.keys() if key not in delta_weights]
    if missing:
        raise ConversionError(
            f"{delta} lacks {len(missing)} tensor(s) of the base {base} (e.g. {missing[0]}): it "
            "is not a delta of this base model"
        )
    groups = [keys for keys in delta_weights.keys_by_file().values() if keys]

    def merged_shards():
        for keys in groups:
            shard = {}
            for key in keys:
                value = delta_weights.get(key)
                if key in base_weights:
                    value = _merge(key, base_weights.get(key), value)
                shard[key] = value
            yield shard

    out.mkdir(parents=True, exist_ok=True)
    write_shards(out, merged_shards(), len(groups))
    skipped = {SAFETENSORS_INDEX, PICKLE_INDEX}
    for path in delta.iterdir():
        if (
            path.is_file()
            and path.suffix not in (".safetensors", ".bin")
            and path.name not in skipped
        ):
            shutil.copy2(path, out / path.name)
    added = len(delta_weights.keys()) - len(base_weights.keys())
    notes = [f"merged {len(base_weights.keys())} tensors; {added} taken from the delta alone"]
    return ConversionReport(out, notes)
