"""Stage presets: which parameters learn in each LLaVA training stage.

align    (stage 1, feature alignment): vision tower and LLM frozen, projector trained; with
         <im_start>/<im_end> the LLM's input embeddings learn too (LLaVA v1).
instruct (stage 2, visual instruction tuning): vision tower frozen, projector + LLM trained,
         or projector + LoRA adapters on the LLM.
The vision tower can be unfrozen in either stage with `tune_vision_tower`. A LLaVAR high-res
branch trains its cross-attention blocks with the projector in both stages (its encoder stays
frozen).
"""

from __future__ import annotations

from torch import nn
from transformers.pytorch_utils import Conv1D

from llavakit.config import LoraSettings, TrainConfig
from llavakit.model.llava import LlavaModel

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
        model.language_model = wrap_lora(model.language_model, config.lora)
    else:
        model.language_model.requires_grad_(True)


def lora_targets(language_model: nn.Module) -> list[str]:
    """Every linear layer's name in the LLM except the output head (the LLaVA LoRA recipe)."""
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in language_model.named_modules()
        if isinstance(module, (nn.Linear, Conv1D))
    }
    output = language_model.get_output_embeddings()
    head = {name.rsplit(".", 1)[-1] for name, m in language_model.named_modules() if m is output}
    return sorted(names - head)


def wrap_lora(language_model: nn.Module, settings: LoraSettings) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    targets = settings.target_modules or lora_targets(language_model)
    uses_conv1d = any(isinstance(m, Conv1D) for m in language_model.modules())
    lora_config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        fan_in_fan_out=uses_conv1d,  # GPT-2 stores its linear layers transposed
        task_type="CAUSAL_LM",
    )
    return get_peft_model(language_model, lora_config)


def merge_lora(model: LlavaModel) -> None:
    """Fold LoRA adapters into the LLM weights so the checkpoint is a plain model."""
    if hasattr(model.language_model, "merge_and_unload"):
        model.language_model = model.language_model.merge_and_unload()


def trainable_summary(model: nn.Module) -> dict[str, int]:
    """Trainable parameter counts per top-level component."""
    summary: dict[str, int] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            part = name.split(".", 1)[0]
            summary[part] = summary.get(part, 0) + parameter.numel()
    return summary
