"""LoRA adapters on the language model (peft): wrapping, the settings a checkpoint records, merging.

Training wraps the LLM here, and loading an unmerged adapter checkpoint wraps the base LLM the same
way before its adapter weights go in, so parameter names (`language_model.base_model.model...
lora_A.default.weight`) are identical on both sides. The resolved target list and GPT-2's
transposed layout are recorded, never re-derived from a model name.
"""

from __future__ import annotations

import dataclasses

from torch import nn
from transformers.pytorch_utils import Conv1D

from llavakit.config import LoraSettings, from_dict


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


def resolved_settings(language_model: nn.Module, settings: LoraSettings) -> LoraSettings:
    """The settings with `target_modules` filled in for this LLM (what a checkpoint records)."""
    targets = settings.target_modules or lora_targets(language_model)
    return dataclasses.replace(settings, target_modules=list(targets))


def wrap_lora(language_model: nn.Module, settings: LoraSettings) -> nn.Module:
    """The LLM wrapped in a peft model with fresh adapters (B = 0, so outputs are unchanged)."""
    from peft import LoraConfig, get_peft_model

    settings = resolved_settings(language_model, settings)
    uses_conv1d = any(isinstance(m, Conv1D) for m in language_model.modules())
    lora_config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        fan_in_fan_out=uses_conv1d,  # GPT-2 stores its linear layers transposed
        task_type="CAUSAL_LM",
    )
    return get_peft_model(language_model, lora_config)


def has_lora(language_model: nn.Module) -> bool:
    return hasattr(language_model, "merge_and_unload")


def settings_record(language_model: nn.Module) -> dict | None:
    """What an unmerged checkpoint stores to rebuild the wrapping: LoraSettings as a mapping."""
    if not has_lora(language_model):
        return None
    config = language_model.peft_config[language_model.active_adapter]
    settings = LoraSettings(
        r=config.r,
        alpha=config.lora_alpha,
        dropout=config.lora_dropout,
        target_modules=sorted(config.target_modules),
        merge_on_save=False,
    )
    return dataclasses.asdict(settings)


def settings_from_record(record: dict, where: str) -> LoraSettings:
    return from_dict(LoraSettings, record, where=where)


def merge_lora(language_model: nn.Module) -> nn.Module:
    """The LLM with its adapters folded into the weights (a plain transformers model)."""
    if has_lora(language_model):
        return language_model.merge_and_unload()
    return language_model
