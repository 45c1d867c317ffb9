"""transformers' `LlavaForConditionalGeneration` / `LlavaNext` folders into llavakit checkpoints.

The tower, the language model and the tokenizer are staged as the plain Hugging Face folders
llavakit's one builder (`model/io.assemble`) takes, the projector (and AnyRes newline) weights are
copied in, and the result is saved as a llavakit checkpoint. What the HF folder does not say
(the conversation template, the aspect mode) comes from a llavakit export's record, the caller,
or LLaVA-1.5's defaults, with a note saying which.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlavaConfig,
    LlavaNextConfig,
)

from llavakit.config import ModelConfig
from llavakit.conversation import IMAGE_TOKEN
from llavakit.image_config import ImageProcessorConfig
from llavakit.model.convert import ConversionError, ConversionReport
from llavakit.model.convert_hf import DTYPE_NAMES, EXPORT_RECORD, HF_PROJECTOR
from llavakit.model.integrity import require_safetensors
from llavakit.model.io import assemble, save_checkpoint
from llavakit.model.llava import LlavaModel
from llavakit.model.towers import UnknownTowerFamily, family_for


def _check_importable(hf_dir: Path) -> LlavaConfig | LlavaNextConfig:
    if not (hf_dir / "config.json").is_file():
        raise FileNotFoundError(f"{hf_dir} has no config.json")
    config = AutoConfig.from_pretrained(str(hf_dir))
    where = str(hf_dir / "config.json")
    if config.model_type not in ("llava", "llava_next"):
        raise ConversionError(
            f"{where}: model_type {config.model_type!r}; import-hf reads "
            "LlavaForConditionalGeneration and LlavaNextForConditionalGeneration folders "
            "(model_type 'llava' or 'llava_next')"
        )
    if not isinstance(config.vision_feature_layer, int):
        raise ConversionError(
            f"{where}: vision_feature_layer {config.vision_feature_layer} concatenates several "
            "layers; llavakit's vision tower selects one"
        )
    _vision_feature(config, where)
    if config.projector_hidden_act != "gelu":
        raise ConversionError(
            f"{where}: projector_hidden_act {config.projector_hidden_act!r}; llavakit's "
            "mlp2x_gelu projector uses exact GELU ('gelu')"
        )
    return config


def _vision_feature(config: LlavaConfig, where: str) -> str:
    """llavakit's vision_select_feature for the HF strategy, or a refusal."""
    tower_type = config.vision_config.model_type
    try:
        family = family_for(tower_type)
    except UnknownTowerFamily as error:
        raise ConversionError(f"{where}: {error}") from error
    try:
        return family.select_feature_for(config.vision_feature_select_strategy)
    except ValueError as error:
        raise ConversionError(f"{where}: {error}") from error


def _stage_language_model(hf, folder: Path) -> None:
    """Write the LLaVA's language model + head as a plain causal-LM folder."""
    text_config = hf.config.text_config
    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(text_config)
    state = {
        f"{lm.base_model_prefix}.{k}": v for k, v in hf.model.language_model.state_dict().items()
    }
    head = lm.get_output_embeddings()
    for name, module in lm.named_modules():
        if module is head:
            state[f"{name}.weight"] = hf.lm_head.weight
    # Weights are assigned, not copied; only the non-persistent buffers stay on the meta device,
    # and save_pretrained does not write those.
    lm.load_state_dict(state, strict=True, assign=True)
    lm.config.architectures = [type(lm).__name__]
    lm.save_pretrained(str(folder))


def _read_image_config(hf_dir: Path) -> ImageProcessorConfig:
    path = hf_dir / "preprocessor_config.json"
    if path.is_file():
        return ImageProcessorConfig.from_pretrained(hf_dir)
    nested = hf_dir / "processor_config.json"
    if nested.is_file():
        data = json.loads(nested.read_text()).get("image_processor")
        if isinstance(data, dict):
            return ImageProcessorConfig.from_dict(data, source=str(nested))
    raise FileNotFoundError(f"{hf_dir} has no image processor config (preprocessor_config.json)")


def import_hf(
    hf_dir: str | Path,
    out: str | Path,
    template: str | None = None,
    image_aspect_ratio: str | None = None,
) -> ConversionReport:
    """Read a LlavaForConditionalGeneration (or LlavaNext) folder into a llavakit checkpoint.

    template / image_aspect_ratio default to what a llavakit export recorded, else vicuna_v1 / pad
    (LLaVA-1.5's settings), since HF folders do not say which conversation format was trained.
    LLaVA-NeXT folders are always AnyRes.
    """
    from transformers import LlavaForConditionalGeneration, LlavaNextForConditionalGeneration

    hf_dir, out = Path(hf_dir), Path(out)
    hf_config = _check_importable(hf_dir)
    next_model = hf_config.model_type == "llava_next"
    if next_model:
        if image_aspect_ratio not in (None, "anyres"):
            raise ConversionError(
                f"{hf_dir} is a LLaVA-NeXT model: its images are AnyRes tiles, not "
                f"{image_aspect_ratio!r}"
            )
        image_aspect_ratio = "anyres"
    record_path = hf_dir / EXPORT_RECORD
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    notes = []
    template = template or record.get("template")
    if template is None:
        template = "vicuna_v1"
        notes.append("no --template given: using vicuna_v1 (LLaVA-1.5's conversation format)")
    aspect = image_aspect_ratio or record.get("image_aspect_ratio")
    if aspect is None:
        aspect = "pad"
        notes.append("no --image-aspect-ratio given: using pad (LLaVA-1.5's preprocessing)")
    image_config = _read_image_config(hf_dir)

    model_class = LlavaNextForConditionalGeneration if next_model else LlavaForConditionalGeneration
    require_safetensors(hf_dir, "transformers LLaVA")  # a pickled .bin is refused, never read
    hf = model_class.from_pretrained(str(hf_dir), dtype="auto", use_safetensors=True).eval()
    encoder = hf.model.vision_tower
    feature = _vision_feature(hf_config, str(hf_dir / "config.json"))
    dtype = DTYPE_NAMES.get(hf.dtype, "float32")
    config = ModelConfig(
        projector_type=HF_PROJECTOR,
        vision_select_layer=hf_config.vision_feature_layer,
        vision_select_feature=feature,
        image_aspect_ratio=aspect,
        image_grid_pinpoints=hf_config.image_grid_pinpoints if next_model else None,
        template=template,
        dtype=dtype,
        **({"max_length": record["max_length"]} if "max_length" in record else {}),
    )
    staging = out / ".import-staging"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        encoder.save_pretrained(str(staging / "vision_tower"))
        image_config.save_pretrained(staging / "vision_tower")
        _stage_language_model(hf, staging / "language_model")
        AutoTokenizer.from_pretrained(str(hf_dir)).save_pretrained(str(staging / "tokenizer"))
        model, processor = assemble(
            config,
            staging / "vision_tower",
            staging / "language_model",
            staging / "tokenizer",
            staging / "vision_tower",
        )
        if processor.image_token_id != hf_config.image_token_id:
            raise ConversionError(
                f"{hf_dir}: the tokenizer's {IMAGE_TOKEN} id {processor.image_token_id} differs from "
                f"config image_token_index {hf_config.image_token_id}"
            )
        _load_projector(model, hf)
        if next_model:
            model.image_newline.data.copy_(hf.model.image_newline.data)
        save_checkpoint(model, processor, out, metadata={"imported_from": str(hf_dir.resolve())})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ConversionReport(out, notes)


def _load_projector(model: LlavaModel, hf) -> None:
    source = hf.model.multi_modal_projector
    for index, linear in ((0, source.linear_1), (2, source.linear_2)):
        target = model.projector[index]
        target.weight.data.copy_(linear.weight.data)
        if linear.bias is not None:
            target.bias.data.copy_(linear.bias.data)
        else:  # multimodal_projector_bias=False: a zero bias computes the same thing
            target.bias.data.zero_()
