"""Building models from Hugging Face folders, and llavakit checkpoints.

A llavakit checkpoint is a folder:
    config.json              {"format": "llavakit", "model": ModelConfig, "geometry": ...,
                              "checksums": {weight file: SHA-256},
                              "trained_weights": {...} when model.safetensors is there}
    projector.safetensors    projector (+ AnyRes image_newline) weights
    highres.safetensors      LLaVAR high-res cross-attention blocks and crop embeddings
    highres_encoder/         HF folder of the high-res encoder, when copied and not the tower's
    vision_tower/            HF folder of the tower, when copied
    language_model/          HF folder of the LLM, when copied
    model.safetensors        trained parameters over referenced parts (training checkpoints,
                             unmerged LoRA adapters; see model/partial.py)
    tokenizer files          with <image> (and <im_start>/<im_end>) added
    preprocessor_config.json the image preprocessing the model was trained with
Components that stayed frozen may instead be referenced by absolute path (stage 1 saves only the
projector, as the papers do). Loading goes through exactly the same builder as a fresh model made
from a real CLIP + Vicuna pair: the builder takes folders, the checkpoint just names them.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tokenizers import AddedToken
from transformers import AutoModelForCausalLM, AutoTokenizer

from llavakit.config import ConfigError, HighresSettings, ModelConfig, from_dict
from llavakit.conversation import IMAGE_TOKEN
from llavakit.image_config import PREPROCESSOR_FILE, ImageProcessorConfig
from llavakit.image_tokens import has_image_newline
from llavakit.model.highres import HighresBranch, HighresError, build_highres
from llavakit.model.integrity import (
    CheckpointError,
    check_safetensors,
    record_checksums,
    require_safetensors,
    verify_checksums,
)
from llavakit.model.llava import LlavaModel
from llavakit.model.lora import has_lora, settings_record
from llavakit.model.partial import TRAINED_WEIGHTS, apply_trained_weights, write_trained_weights
from llavakit.model.projector import build_projector
from llavakit.model.vision import VisionTower
from llavakit.processor import IM_END_TOKEN, IM_START_TOKEN, LlavaProcessor, VisionGeometry

CHECKPOINT_FORMAT = "llavakit"
CONFIG_NAME = "config.json"
PROJECTOR_WEIGHTS = "projector.safetensors"
HIGHRES_WEIGHTS = "highres.safetensors"
HIGHRES_ENCODER = "highres_encoder"
_PROJECTOR_PARTS = ("projector", "image_newline")  # what projector.safetensors holds
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ConfigError(f"unknown dtype {name!r}; known: {', '.join(_DTYPES)}")
    return _DTYPES[name]


def add_image_tokens(tokenizer, use_im_start_end: bool) -> None:
    """Register <image> (and the optional wrapping tokens) as special tokens; idempotent."""
    names = [IMAGE_TOKEN] + ([IM_START_TOKEN, IM_END_TOKEN] if use_im_start_end else [])
    missing = [n for n in names if n not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens(
            [AddedToken(n, special=True, normalized=False) for n in missing], special_tokens=True
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token


def _require_folder(folder: str | Path, what: str) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{what} folder {folder} does not exist")
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{what} folder {folder} has no config.json")
    return folder


def load_language_model(
    config: ModelConfig, folder: str | Path | None = None, device_map: str | dict | None = None
):
    folder = _require_folder(folder or config.language_model, "language model")
    require_safetensors(folder, "language model")
    kwargs = {
        "dtype": torch_dtype(config.dtype),
        "attn_implementation": config.attn_implementation,
        "use_safetensors": True,  # never a pickled pytorch_model.bin lying beside them
    }
    if device_map is not None:
        kwargs["device_map"] = device_map  # split across GPUs by accelerate
    if config.load_in_bits:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=config.load_in_bits == 4,
            load_in_8bit=config.load_in_bits == 8,
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_quant_type="nf4",
        )
    return AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)


def load_vision_tower(config: ModelConfig, folder: str | Path | None = None) -> VisionTower:
    folder = _require_folder(folder or config.vision_tower, "vision tower")
    return VisionTower.from_pretrained(
        folder,
        config.vision_select_layer,
        config.vision_select_feature,
        dtype=torch_dtype(config.dtype),
    )


def assemble(
    config: ModelConfig,
    vision_folder: str | Path,
    llm_folder: str | Path,
    tokenizer_folder: str | Path,
    image_config_folder: str | Path,
    device_map: str | dict | None = None,
) -> tuple[LlavaModel, LlavaProcessor]:
    """The one builder: folders in, a model (fresh projector) and its processor out."""
    tokenizer_folder = Path(tokenizer_folder)
    if not any(tokenizer_folder.glob("tokenizer*")):
        raise CheckpointError(f"tokenizer folder {tokenizer_folder} has no tokenizer files")
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_folder))
    add_image_tokens(tokenizer, config.use_im_start_end)
    tower = load_vision_tower(config, vision_folder)
    language_model = load_language_model(config, llm_folder, device_map)
    if config.use_im_start_end:
        needed = max(tokenizer.convert_tokens_to_ids([IM_START_TOKEN, IM_END_TOKEN])) + 1
        if language_model.get_input_embeddings().num_embeddings < needed:
            # New rows start at the mean embedding (transformers' mean resizing).
            language_model.resize_token_embeddings(needed)
    text_dim = language_model.get_input_embeddings().embedding_dim
    projector = build_projector(config.projector_type, tower.hidden_size, text_dim)
    projector.to(torch_dtype(config.dtype))
    newline = None
    if has_image_newline(config):
        newline = torch.nn.Parameter(
            torch.randn(text_dim, dtype=torch_dtype(config.dtype)) / text_dim**0.5
        )
    image_config = ImageProcessorConfig.from_pretrained(image_config_folder)
    highres = None
    if config.highres is not None:
        _check_highres_preprocessing(config.highres, image_config)
        highres, resolved = build_highres(
            config.highres, tower, language_model, torch_dtype(config.dtype)
        )
        config = dataclasses.replace(config, highres=resolved)
    model = LlavaModel(
        config,
        tower,
        projector,
        language_model,
        tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        newline,
        highres,
    )
    geometry = VisionGeometry(
        tower.image_size,
        tower.patch_size,
        tower.num_features,
        highres.encoder.image_size if highres is not None else None,
    )
    return model, LlavaProcessor(tokenizer, image_config, config, geometry)


def _check_highres_preprocessing(settings: HighresSettings, image_config: ImageProcessorConfig):
    """The high-res crops are normalised as the main tower's pixels: refuse an encoder that
    declares other statistics (its crop size is read from its own config)."""
    if not settings.encoder:
        return
    path = Path(settings.encoder) / PREPROCESSOR_FILE
    if not path.is_file():
        return
    own = ImageProcessorConfig.from_pretrained(settings.encoder)
    fields = ("image_mean", "image_std", "rescale_factor")
    if any(getattr(own, name) != getattr(image_config, name) for name in fields):
        raise ConfigError(
            f"{path}: the high-res encoder normalises pixels with mean {own.image_mean}, std "
            f"{own.image_std}, but the main tower uses {image_config.image_mean}, "
            f"{image_config.image_std}; llavakit feeds both the same normalisation"
        )


def build_model(
    config: ModelConfig, device_map: str | dict | None = None
) -> tuple[LlavaModel, LlavaProcessor]:
    """A fresh LLaVA from a vision folder and an LLM folder (projector randomly initialised)."""
    if not config.vision_tower or not config.language_model:
        raise ConfigError("model.vision_tower and model.language_model must name folders")
    return assemble(
        config,
        config.vision_tower,
        config.language_model,
        config.tokenizer or config.language_model,
        config.vision_tower,
        device_map,
    )


def _extra_weights(model: LlavaModel, weights: dict | None) -> dict[str, torch.Tensor]:
    if weights is None:
        weights = dict(model.named_parameters())
    names = [n for n, _ in model.named_parameters() if n.split(".", 1)[0] in _PROJECTOR_PARTS]
    return {name: weights[name].detach().contiguous().cpu() for name in names}


def save_checkpoint(
    model: LlavaModel,
    processor: LlavaProcessor,
    folder: str | Path,
    copy_vision: bool = True,
    copy_language_model: bool = True,
    metadata: dict | None = None,
    weights: dict[str, torch.Tensor] | None = None,
    trained: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a llavakit checkpoint; components not copied are referenced by absolute path.

    `weights`: the model's parameters gathered across processes (FSDP2 and ZeRO-3 leave only
    shards in the module); None = the module's own tensors. `trained`: parameters a stage changed,
    stored over the referenced components (model/partial.py), as training checkpoints and
    unmerged LoRA adapters are.
    """
    if copy_language_model and has_lora(model.language_model):
        raise CheckpointError("an unmerged LoRA model references its base language model")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(model.config)
    if copy_vision:
        model.vision_tower.encoder.save_pretrained(folder / "vision_tower")
        config.vision_tower = "vision_tower"
    else:
        config.vision_tower = str(Path(model.config.vision_tower).resolve())
    if copy_language_model:
        model.language_model.save_pretrained(folder / "language_model")
        config.language_model = "language_model"
    else:
        config.language_model = str(Path(model.config.language_model).resolve())
    config.tokenizer = None
    projector = _extra_weights(model, weights)
    save_file(projector, str(folder / PROJECTOR_WEIGHTS), metadata={"format": "pt"})
    if model.highres is not None:
        config.highres = _save_highres(model, folder, copy_vision, weights)
    processor.save_pretrained(folder)
    geometry = dataclasses.asdict(processor.geometry)
    document = {
        "format": CHECKPOINT_FORMAT,
        "model": dataclasses.asdict(config),
        "geometry": geometry,
        "metadata": metadata or {},
    }
    if trained is not None:
        lora = settings_record(model.language_model)
        document["trained_weights"] = write_trained_weights(folder, trained, lora)
    document["checksums"] = _weight_checksums(folder, config, trained is not None)
    (folder / CONFIG_NAME).write_text(json.dumps(document, indent=2))
    return folder


def _weight_checksums(folder: Path, config: ModelConfig, trained: bool) -> dict[str, str]:
    """SHA-256 of every weight file this save wrote (not of referenced folders, nor of the
    Trainer's checkpoint-N folders that may share the output folder); verified by loading."""
    parts = [PROJECTOR_WEIGHTS, HIGHRES_WEIGHTS]
    if trained:
        parts.append(TRAINED_WEIGHTS)
    for component in (config.vision_tower, config.language_model):
        if not Path(component).is_absolute():  # copied into the checkpoint
            parts.append(component)
    if config.highres is not None and config.highres.encoder == HIGHRES_ENCODER:
        parts.append(HIGHRES_ENCODER)
    return record_checksums(folder, parts)


def _save_highres(
    model: LlavaModel, folder: Path, copy_encoder: bool, gathered: dict | None
) -> HighresSettings:
    """Write the branch's trained weights; copy or reference its encoder. Returns its settings
    with `encoder` naming where the encoder now is."""
    branch = model.highres
    weights = branch.trained_state_dict()
    if gathered is not None:
        weights = {k: gathered[f"highres.{k}"] for k in weights}
    weights = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
    save_file(weights, str(folder / HIGHRES_WEIGHTS), metadata={"format": "pt"})
    if not copy_encoder:
        source = branch.source or model.config.vision_tower
        return dataclasses.replace(branch.settings, encoder=str(Path(source).resolve()))
    if _same_weights(branch, model):
        # A copy of the main tower (also being saved): one folder serves both.
        return dataclasses.replace(branch.settings, encoder="vision_tower")
    branch.encoder.encoder.save_pretrained(folder / HIGHRES_ENCODER)
    return dataclasses.replace(branch.settings, encoder=HIGHRES_ENCODER)


def _same_weights(branch: HighresBranch, model: LlavaModel) -> bool:
    ours, tower = branch.encoder.encoder.state_dict(), model.vision_tower.encoder.state_dict()
    return type(branch.encoder.encoder) is type(model.vision_tower.encoder) and (
        ours.keys() == tower.keys() and all(torch.equal(ours[k], tower[k]) for k in ours)
    )


def read_checkpoint_config(folder: str | Path) -> tuple[ModelConfig, dict]:
    folder = Path(folder)
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a llavakit checkpoint: no {CONFIG_NAME}")
    try:
        document = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(
            f"{path}: not valid JSON ({error}): the checkpoint is incomplete or corrupt"
        ) from None
    declared = document.get("format") if isinstance(document, dict) else None
    if declared != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a llavakit checkpoint config (format={declared!r}); "
            "convert other formats with `llavakit import-hf` or `llavakit import-llava`"
        )
    config = from_dict(ModelConfig, document["model"], where=str(path))
    return config, document


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    check_safetensors(path)
    return load_file(str(path))


def _load_highres(branch: HighresBranch, path: Path) -> None:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path.parent} has `highres` but no {path.name}")
    try:
        branch.load_trained_state_dict(_read_weights(path), str(path))
    except HighresError as error:
        raise CheckpointError(str(error)) from None


def _resolve(folder: Path, component: str) -> Path:
    path = Path(component)
    return path if path.is_absolute() else folder / path


def load_checkpoint(
    folder: str | Path,
    dtype: str | None = None,
    device: str | torch.device | None = None,
    overrides: dict | None = None,
    device_map: str | dict | None = None,
    merge_lora: bool = True,
) -> tuple[LlavaModel, LlavaProcessor]:
    """`llavakit.load(path)`: rebuild model + processor (+ template) from the folder alone.

    `overrides` replaces config fields that do not change the weights (template, max_length...),
    as a later training stage does. An unmerged LoRA checkpoint comes back merged unless
    `merge_lora` is False or the base is quantised (`load_in_bits`). Every weight file the
    checkpoint recorded a checksum for (trained weights included) is verified first (reading
    each once); other weight files are checked for truncation.
    """
    folder = Path(folder)
    config, document = read_checkpoint_config(folder)
    config = dataclasses.replace(config, **(overrides or {}))
    if dtype:
        config.dtype = dtype
    weights_path = folder / PROJECTOR_WEIGHTS
    if not weights_path.is_file():
        raise CheckpointError(f"checkpoint {folder} is missing {PROJECTOR_WEIGHTS}")
    verify_checksums(folder, document.get("checksums") or {})
    vision_folder = _resolve(folder, config.vision_tower)
    llm_folder = _resolve(folder, config.language_model)
    if config.highres is not None and config.highres.encoder:
        encoder = str(_resolve(folder, config.highres.encoder))
        config = dataclasses.replace(
            config, highres=dataclasses.replace(config.highres, encoder=encoder)
        )
    model, processor = assemble(config, vision_folder, llm_folder, folder, folder, device_map)
    model.config = dataclasses.replace(
        model.config, vision_tower=str(vision_folder), language_model=str(llm_folder)
    )
    processor.model_config = model.config
    weights = _read_weights(weights_path)
    projector_state = {
        k[len("projector.") :]: v for k, v in weights.items() if k.startswith("projector.")
    }
    try:
        model.projector.load_state_dict(projector_state)
    except RuntimeError as error:
        raise CheckpointError(f"{weights_path}: projector weights do not fit: {error}") from None
    if model.image_newline is not None:
        if "image_newline" not in weights:
            raise CheckpointError(f"{weights_path}: AnyRes model without image_newline weights")
        model.image_newline.data.copy_(weights["image_newline"])
    if model.highres is not None:
        _load_highres(model.highres, folder / HIGHRES_WEIGHTS)
    if document.get("trained_weights"):
        merge = merge_lora and not config.load_in_bits
        apply_trained_weights(model, folder, document["trained_weights"], merge)
    model.eval()
    if device_map is not None or config.load_in_bits:
        # The LLM was placed by accelerate; the tower and projector join its input embeddings.
        first = model.language_model.get_input_embeddings().weight.device
        model.vision_tower.to(first)
        model.projector.to(first)
        if model.highres is not None:
            model.highres.to(first)
        if model.image_newline is not None:
            model.image_newline.data = model.image_newline.data.to(first)
    elif device is not None:
        model.to(device)
    return model, processor
