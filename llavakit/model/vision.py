"""Vision tower: a Hugging Face CLIP or SigLIP encoder and the choice of which features LLaVA uses.

LLaVA takes the patch features of the penultimate layer (select_layer=-2), dropping CLIP's CLS
token ("patch") or keeping it ("cls_patch"). The tower is loaded from a local checkpoint folder with
transformers' own classes, so a real CLIP-ViT-L/14-336 and a tiny random CLIP take the same path.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig

from llavakit.model.integrity import require_safetensors
from llavakit.model.towers import SELECT_FEATURES, family_for, known_model_types


class VisionTowerError(ValueError):
    """The vision tower folder or its settings cannot be used."""


def vision_model_type(folder: str | Path) -> str:
    """The model_type a vision checkpoint folder declares, checked against what we support."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise VisionTowerError(f"vision tower folder {folder} has no config.json")
    model_type = AutoConfig.from_pretrained(folder).model_type
    if model_type not in known_model_types():
        raise VisionTowerError(
            f"vision tower {folder} is a {model_type!r} checkpoint; "
            f"supported: {', '.join(known_model_types())}"
        )
    return model_type


@contextlib.contextmanager
def _transformers_errors_only():
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


class VisionTower(nn.Module):
    """Wraps a CLIP/SigLIP vision encoder and returns the selected layer's features."""

    def __init__(self, encoder: nn.Module, select_layer: int = -2, select_feature: str = "patch"):
        super().__init__()
        if select_feature not in SELECT_FEATURES:
            raise VisionTowerError(
                f"unknown vision select feature {select_feature!r}; known: {', '.join(SELECT_FEATURES)}"
            )
        n_layers = encoder.config.num_hidden_layers
        if not -(n_layers + 1) <= select_layer <= n_layers:
            raise VisionTowerError(
                f"vision select layer {select_layer} out of range for a {n_layers}-layer tower"
            )
        self.encoder = encoder
        self.select_layer = select_layer
        self.select_feature = select_feature
        self.family = family_for(encoder.config.model_type)

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        select_layer: int = -2,
        select_feature: str = "patch",
        dtype: torch.dtype = torch.float32,
    ) -> VisionTower:
        model_type = vision_model_type(folder)
        require_safetensors(folder, "vision tower")
        family = family_for(model_type)
        # A full CLIP/SigLIP checkpoint also holds the text tower: its keys are unused on
        # purpose, so transformers' "unexpected keys" report is silenced for those.
        quiet = family.has_text_tower(model_type)
        with _transformers_errors_only() if quiet else contextlib.nullcontext():
            encoder = family.encoder_class.from_pretrained(
                str(folder), dtype=dtype, use_safetensors=True
            )
        return cls(encoder, select_layer, select_feature)

    @property
    def has_cls(self) -> bool:
        return self.family.has_cls

    @property
    def hidden_size(self) -> int:
        return self.encoder.config.hidden_size

    @property
    def image_size(self) -> int:
        return self.encoder.config.image_size

    @property
    def patch_size(self) -> int:
        return self.encoder.config.patch_size

    @property
    def patches_per_side(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_features(self) -> int:
        """Feature vectors per image (per tile for AnyRes)."""
        return self.family.feature_count(self.patches_per_side, self.select_feature)

    def is_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.encoder.parameters())

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # pixel_values: [n, 3, S, S] -> [n, num_features, hidden]
        no_grad = torch.no_grad() if self.is_frozen() else contextlib.nullcontext()
        with no_grad:
            pixel_values = pixel_values.to(dtype=self.encoder.dtype)
            outputs = self.encoder(pixel_values, output_hidden_states=True)
            features = outputs.hidden_states[self.select_layer]
            if self.family.drops_first(self.select_feature):
                features = features[:, 1:]
        return features
