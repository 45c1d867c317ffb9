"""llavakit checkpoints to and from transformers' `LlavaForConditionalGeneration` folders.

An export is what `LlavaForConditionalGeneration.from_pretrained` (AnyRes models:
`LlavaNextForConditionalGeneration`) + `AutoProcessor.from_pretrained` load and what vLLM, SGLang
and lmms-eval serve: config.json (LlavaConfig / LlavaNextConfig), safetensors weights in
the llava-hf key layout every transformers version and serving engine reads, the tokenizer with
`<image>` inside the embedding range, a Jinja chat template equal to the llavakit template, the
image processor (LLaVA-1.5's pad-to-square is `LlavaImageProcessor(do_pad=True)`) and the
LlavaProcessor settings that expand `<image>` into as many placeholders as the model has features.

HF's LLaVA is one fixed architecture (a CLIP/SigLIP layer, Linear-GELU-Linear, any causal LM), so
models outside it are refused before any weight is read, with the reason. The way back (such a
folder into a llavakit checkpoint) is `convert_hf_import.py`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import torch
from transformers import (
    LlavaConfig,
    LlavaNextConfig,
)

from llavakit.conversation import IMAGE_TOKEN
from llavakit.model.convert import ConversionError, ConversionReport, write_state_dict
from llavakit.model.convert_hf_compat import rewrite_model_config, rewrite_tokenizer_files
from llavakit.model.convert_template import chat_template_for
from llavakit.model.io import CONFIG_NAME, load_checkpoint
from llavakit.model.llava import LlavaModel
from llavakit.model.vision import VisionTower
from llavakit.processor import LlavaProcessor

EXPORT_RECORD = "llavakit_export.json"
"""Written into every export: the source, the llavakit settings and the notes (import-hf reads it)."""

HF_PROJECTOR = "mlp2x_gelu"
DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


# ---- export --------------------------------------------------------------------------------------
def check_exportable(checkpoint: str | Path) -> dict:
    """Refuse, from config.json alone, the models LlavaForConditionalGeneration cannot represent.

    Returns the checkpoint's raw model config. Runs before any weight is loaded, so a refusal is
    immediate even for a 13B checkpoint.
    """
    path = Path(checkpoint) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{checkpoint} is not a llavakit checkpoint: no {CONFIG_NAME}")
    model = json.loads(path.read_text()).get("model", {})
    highres = sorted(k for k, v in model.items() if k.startswith("highres") and v)
    if highres:
        raise ConversionError(
            f"{path}: the model uses LLaVAR's high-resolution encoder ({', '.join(highres)}); its "
            "cross-attention blocks inside the decoder have no counterpart in transformers' "
            "LlavaForConditionalGeneration, so it cannot be exported"
        )
    projector = model.get("projector_type", HF_PROJECTOR)
    if projector != HF_PROJECTOR:
        raise ConversionError(
            f"{path}: projector_type {projector!r} cannot be represented: transformers' "
            "LlavaMultiModalProjector is always Linear-GELU-Linear (llavakit's mlp2x_gelu)"
        )
    if model.get("use_im_start_end"):
        raise ConversionError(
            f"{path}: use_im_start_end wraps each image in learned <im_start>/<im_end> tokens, "
            "which LlavaProcessor does not insert; the export would see different prompts"
        )
    if model.get("image_aspect_ratio") == "anyres" and model.get("anyres_max_patches"):
        raise ConversionError(
            f"{path}: anyres_max_patches (LLaVA-OneVision's anyres_max_N) shrinks large grids, "
            "which LlavaNextForConditionalGeneration does not do; it cannot be exported"
        )
    return model


def _select_strategy(tower: VisionTower) -> tuple[str, int]:
    """(vision_feature_select_strategy, num_additional_image_tokens) giving the same features."""
    return tower.family.hf_strategy(tower.select_feature)


def _grow_rows(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """Append rows equal to the mean row: a mean output row never wins an argmax over real tokens."""
    extra = rows - weight.shape[0]
    if extra <= 0:
        return weight
    mean = weight.float().mean(dim=0, keepdim=True).to(weight.dtype)
    return torch.cat([weight, mean.expand(extra, *weight.shape[1:])], dim=0)


def _language_model_parts(lm, vocab: int) -> tuple[dict, torch.Tensor]:
    """The LM's base-model tensors and its output weight, both grown to `vocab` rows."""
    head_module = lm.get_output_embeddings()
    if head_module is None or getattr(head_module, "bias", None) is not None:
        raise ConversionError(
            f"{type(lm).__name__}: transformers' LLaVA needs an output layer without bias"
        )
    head_names = {f"{name}.weight" for name, m in lm.named_modules() if m is head_module}
    prefix = lm.base_model_prefix + "."
    base, others = {}, []
    for key, tensor in lm.state_dict().items():
        if key.startswith(prefix):
            base[key[len(prefix) :]] = tensor
        elif key not in head_names:
            others.append(key)
    if others:
        raise ConversionError(
            f"{type(lm).__name__} has weights outside its base model and output layer "
            f"({', '.join(others[:3])}), which transformers' LLaVA cannot hold"
        )
    embed = lm.get_input_embeddings()
    embed_key = next(n for n, m in lm.base_model.named_modules() if m is embed) + ".weight"
    base[embed_key] = _grow_rows(embed.weight.data, vocab)
    head = base[embed_key] if head_module.weight is embed.weight else head_module.weight.data
    return base, _grow_rows(head, vocab).clone()


def _hf_state_dict(model: LlavaModel, vocab: int) -> tuple[dict[str, torch.Tensor], str]:
    """Weights under LlavaForConditionalGeneration's names, and which key layout was used.

    llava-hf layout (`vision_tower.vision_model.*`, `multi_modal_projector.*`,
    `language_model.model.*`, `language_model.lm_head.*`, NeXT's `image_newline`) is what the
    published checkpoints use and what every transformers version and serving engine reads;
    transformers 5 maps it onto its own names for LMs whose base model is called `model`. Other
    LMs get transformers' current names.
    """
    lm = model.language_model
    base, head = _language_model_parts(lm, vocab)
    projector = {
        "linear_1.weight": model.projector[0].weight,
        "linear_1.bias": model.projector[0].bias,
        "linear_2.weight": model.projector[2].weight,
        "linear_2.bias": model.projector[2].bias,
    }
    encoder = model.vision_tower.encoder.state_dict()
    legacy = lm.base_model_prefix == "model"
    state: dict[str, torch.Tensor] = {}
    if legacy:
        for key, tensor in encoder.items():
            nested = key if key.startswith("vision_model.") else f"vision_model.{key}"
            state[f"vision_tower.{nested}"] = tensor
        state |= {f"multi_modal_projector.{k}": v for k, v in projector.items()}
        state |= {f"language_model.model.{k}": v for k, v in base.items()}
        state["language_model.lm_head.weight"] = head
        if model.image_newline is not None:
            state["image_newline"] = model.image_newline.data
    else:
        state |= {f"model.vision_tower.{k}": v for k, v in encoder.items()}
        state |= {f"model.multi_modal_projector.{k}": v for k, v in projector.items()}
        state |= {f"model.language_model.{k}": v for k, v in base.items()}
        state["lm_head.weight"] = head
        if model.image_newline is not None:
            state["model.image_newline"] = model.image_newline.data
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    return state, "llava-hf" if legacy else "transformers-native"


def _image_processor_dict(processor: LlavaProcessor) -> dict:
    """preprocessor_config.json reproducing llavakit's preprocessing for this model."""
    image_config = processor.image_config
    aspect = processor.model_config.image_aspect_ratio
    if aspect == "anyres":
        data = image_config.to_dict()
        data["image_processor_type"] = "LlavaNextImageProcessor"
        data["image_grid_pinpoints"] = [list(pair) for pair in processor.pinpoints]
        data["do_pad"] = True
        data["processor_class"] = "LlavaNextProcessor"
        return data
    if aspect == "resize":
        side = image_config.tile_size
        image_config = dataclasses.replace(
            image_config, size=side, crop_size=None, do_center_crop=False
        )
    data = image_config.to_dict()
    # LlavaImageProcessor pads to a square with int(mean * 255) and centres the image, exactly
    # LLaVA-1.5's expand2square; without padding the plain CLIP processor is the most portable.
    data["image_processor_type"] = (
        "LlavaImageProcessor" if aspect == "pad" else "CLIPImageProcessor"
    )
    if aspect == "pad":
        data["do_pad"] = True
    data["processor_class"] = "LlavaProcessor"
    return data


def _generation_config(lm, tokenizer, template, notes: list[str]):
    """The LM's generation config, stopping also at the template's end-of-turn token."""
    config = copy.deepcopy(lm.generation_config)
    eos = config.eos_token_id if config.eos_token_id is not None else tokenizer.eos_token_id
    eos_ids = list(eos) if isinstance(eos, (list, tuple)) else [eos] if eos is not None else []
    stop = template.stop_str
    if stop:
        stop_ids = tokenizer.encode(stop, add_special_tokens=False)
        if len(stop_ids) == 1:
            eos_ids += [i for i in stop_ids if i not in eos_ids]
        else:
            notes.append(
                f"template {template.name!r} ends each answer with {stop!r}, which is "
                f"{len(stop_ids)} tokens: pass it as a stop string when generating (vLLM/OpenAI "
                "`stop=[...]`, transformers `stop_strings=[...]` with `tokenizer=`)"
            )
    config.eos_token_id = eos_ids[0] if len(eos_ids) == 1 else eos_ids or None
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
    return config


def _hf_config(model: LlavaModel, processor: LlavaProcessor, vocab: int, strategy: str):
    """(LlavaConfig or LlavaNextConfig, class-name stem) describing the exported model."""
    tower, lm = model.vision_tower, model.language_model
    text_config = lm.config.to_dict()
    text_config["vocab_size"] = vocab
    # The head is written out, untied: transformers' LLaVA can tie it only to an `embed_tokens`
    # embedding, and an untied copy computes the same logits everywhere.
    text_config["tie_word_embeddings"] = False
    common = dict(
        tie_word_embeddings=False,
        vision_config=tower.encoder.config.to_dict(),
        text_config=text_config,
        image_token_id=processor.image_token_id,
        image_seq_length=tower.num_features,
        vision_feature_layer=tower.select_layer,
        vision_feature_select_strategy=strategy,
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
    )
    if processor.pinpoints is None:
        config, kind = LlavaConfig(**common), "Llava"
    else:
        pinpoints = [list(pair) for pair in processor.pinpoints]
        config, kind = LlavaNextConfig(**common, image_grid_pinpoints=pinpoints), "LlavaNext"
    config.architectures = [f"{kind}ForConditionalGeneration"]
    config.dtype = DTYPE_NAMES.get(lm.dtype, "float32")
    return config, kind


def _write_processor_files(
    out: Path, processor: LlavaProcessor, processor_config: dict, notes: list[str]
) -> None:
    """Tokenizer (+ chat template), image processor and processor settings."""
    tokenizer = processor.tokenizer
    if processor.template.uses_chat_template:
        if tokenizer.chat_template:
            notes.append(
                "the tokenizer's own chat template is kept: write images as '<image>' in the "
                "message text (list-of-parts content may not render images)"
            )
        else:
            notes.append("template 'tokenizer' but the tokenizer has no chat_template: none kept")
    else:
        tokenizer.chat_template = chat_template_for(processor.template)
    tokenizer.save_pretrained(out)
    if tokenizer.chat_template:
        (out / "chat_template.jinja").write_text(tokenizer.chat_template)
    rewrite_tokenizer_files(out, tokenizer.chat_template)
    image_processor = _image_processor_dict(processor)
    (out / "preprocessor_config.json").write_text(json.dumps(image_processor, indent=2) + "\n")
    (out / "processor_config.json").write_text(json.dumps(processor_config, indent=2) + "\n")


def export_hf(
    checkpoint: str | Path,
    out: str | Path,
    dtype: str | None = None,
    max_shard_size: str | int = "5GB",
) -> ConversionReport:
    """Write a llavakit checkpoint as a LlavaForConditionalGeneration folder (see module doc).

    The report's notes (also saved in llavakit_export.json) say what callers must do themselves.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    check_exportable(checkpoint)
    model, processor = load_checkpoint(checkpoint, dtype=dtype)
    notes: list[str] = []
    tower, lm, tokenizer = model.vision_tower, model.language_model, processor.tokenizer
    # <image> gets a row of its own: transformers embeds every id before replacing placeholders.
    vocab = max(lm.get_input_embeddings().num_embeddings, len(tokenizer))
    state, layout = _hf_state_dict(model, vocab)
    if layout != "llava-hf":
        notes.append(
            f"{type(lm).__name__} is not a `model.`-based LM: weights use transformers' current "
            "key names, which older transformers versions and serving engines may not read"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_state_dict(out, state, max_shard_size)
    strategy, additional = _select_strategy(tower)
    hf_config, kind = _hf_config(model, processor, vocab, strategy)
    hf_config.save_pretrained(out)
    rewrite_model_config(out, notes)
    _generation_config(lm, tokenizer, processor.template, notes).save_pretrained(out)
    processor_config = {
        "processor_class": f"{kind}Processor",
        "image_token": IMAGE_TOKEN,
        "patch_size": tower.patch_size,
        "vision_feature_select_strategy": strategy,
        "num_additional_image_tokens": additional,
    }
    _write_processor_files(out, processor, processor_config, notes)
    record = {
        "source": str(checkpoint.resolve()),
        "template": processor.template.name,
        "image_aspect_ratio": processor.model_config.image_aspect_ratio,
        "max_length": processor.model_config.max_length,
        "weights_layout": layout,
        "notes": notes,
    }
    (out / EXPORT_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return ConversionReport(out, notes)
