"""Stage presets: which parameters learn in each LLaVA training stage.

align    (stage 1, feature alignment): vision tower and LLM frozen, projector trained; with
         <im_start>/<im_end> the LLM's input embeddings learn too (LLaVA v1).
instruct (stage 2, visual instruction tuning): vision tower frozen, projector + LLM trained,
         or projector + LoRA adapters on the LLM (over a 4/8-bit base: QLoRA, GPU only).
The vision tower can be unfrozen in either stage with `tune_vision_tower`. A LLaVAR high-res
branch trains its cross-attention blocks with the projector in both stages (its encoder stays
frozen).
"""

from __future__ import annotations

import importlib.util

import torch
from torch import nn

from llavakit.config import ConfigError, ModelConfig, TrainConfig
from llavakit.model.llava import LlavaModel
from llavakit.model.lora import wrap_lora

STAGES = ("align", "instruct")


def apply_stage(model: LlavaModel, config: TrainConfig) -> None:
    """Set requires_grad for every parameter according to the stage (and wrap LoRA)."""
    if config.stage not in STAGES:
        raise ValueError(f"unknown training stage {config.stage!r}; known: {', '.join(STAGES)}")
    model.requires_grad_(False)
    model.projector.requires_grad_(True)
    if model.image_newline is not None:
        model.image_newline.requires_grad_(True)
    if model.highres is not None:
        model.highres.set_trainable(True)
    if config.tune_vision_tower:
        model.vision_tower.requires_grad_(True)
    if config.stage == "align":
        if model.config.use_im_start_end:
            model.language_model.get_input_embeddings().requires_grad_(True)
        if config.lora is not None:
            raise ValueError(
                "LoRA applies to the instruct stage; the align stage trains the projector only"
            )
        return
    if config.lora is not None:
        if model.config.load_in_bits:
            model.language_model = prepare_quantised(
                model.language_model, config.gradient_checkpointing
            )
        model.language_model = wrap_lora(model.language_model, config.lora)
    else:
        model.language_model.requires_grad_(True)


def prepare_quantised(language_model: nn.Module, gradient_checkpointing: bool) -> nn.Module:
    """k-bit preparation of a 4/8-bit base before LoRA (QLoRA): norms and head in float32,
    input gradients enabled so checkpointed layers backpropagate into the adapters."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(
        language_model, use_gradient_checkpointing=gradient_checkpointing
    )


def check_quantised_training(model: ModelConfig, config: TrainConfig) -> None:
    """QLoRA needs LoRA, a CUDA GPU and bitsandbytes (the `gpu` extra): refuse clearly up front."""
    if not model.load_in_bits:
        return
    if model.load_in_bits not in (4, 8):
        raise ConfigError(f"model.load_in_bits must be 4 or 8, got {model.load_in_bits}")
    if config.lora is None:
        raise ConfigError(
            f"model.load_in_bits={model.load_in_bits} trains LoRA adapters over a quantised "
            "base (QLoRA); set train.lora, a quantised model cannot be trained fully"
        )
    if not torch.cuda.is_available():
        raise ConfigError(
            f"model.load_in_bits={model.load_in_bits} (QLoRA) needs a CUDA GPU for bitsandbytes' "
            "k-bit kernels, and this machine has none; train without load_in_bits "
            "(plain LoRA) here"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(
            f"model.load_in_bits={model.load_in_bits} (QLoRA) needs bitsandbytes: "
            'pip install "llavakit[gpu]"'
        )


def trainable_summary(model: nn.Module) -> dict[str, int]:
    """Trainable parameter counts per top-level component."""
    summary: dict[str, int] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            part = name.split(".", 1)[0]
            summary[part] = summary.get(part, 0) + parameter.numel()
    return summary
