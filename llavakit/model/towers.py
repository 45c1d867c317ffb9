"""Vision-tower families: what llavakit needs to know about each kind of encoder, in one registry.

A family says which transformers class loads its checkpoints, which `model_type` values those
checkpoints declare (the full model, with its text tower, and the vision-only one used inside a
LLaVA config), whether the encoder puts a CLS token before its patches, and from that how many
features one crop yields for each `vision_select_feature`. The tower (`model/vision.py`), the
processor's token count (through the tower's `num_features`), conversion and export all ask this
registry; none of them tests an encoder class or a model_type string itself. Adding a family
(SigLIP2, say) is one entry in `FAMILIES` and its test.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import CLIPVisionModel, PreTrainedModel, SiglipVisionModel

SELECT_FEATURES = ("patch", "cls_patch")
"""`patch`: the patch features only (CLS dropped); `cls_patch`: CLS too, when the tower has one."""


class UnknownTowerFamily(ValueError):
    """A checkpoint's model_type is not one of the registered vision-tower families."""


@dataclass(frozen=True)
class TowerFamily:
    """One kind of vision encoder."""

    name: str
    encoder_class: type[PreTrainedModel]
    """transformers class that loads the vision encoder from a checkpoint folder."""
    model_types: tuple[str, ...]
    """config.json `model_type` values of its checkpoints: the full model first, then vision-only."""
    has_cls: bool
    """Whether the encoder's output starts with a CLS token before the patch features."""

    @property
    def vision_model_type(self) -> str:
        """The vision-only model_type, as a LLaVA config's `vision_config` declares it."""
        return self.model_types[-1]

    def has_text_tower(self, model_type: str) -> bool:
        """A full (vision + text) checkpoint: its text weights are unused on purpose."""
        return model_type != self.vision_model_type

    def drops_first(self, select_feature: str) -> bool:
        """Whether the selected features leave out the encoder's first output (the CLS token)."""
        return self.has_cls and select_feature == "patch"

    def feature_count(self, patches_per_side: int, select_feature: str) -> int:
        """Feature vectors one square crop yields (per tile for AnyRes)."""
        patches = patches_per_side**2
        return patches + 1 if self.has_cls and select_feature == "cls_patch" else patches

    def hf_strategy(self, select_feature: str) -> tuple[str, int]:
        """transformers' (vision_feature_select_strategy, num_additional_image_tokens) that select
        the same features."""
        return ("default" if self.drops_first(select_feature) else "full"), int(self.has_cls)

    def select_feature_for(self, strategy: str) -> str:
        """llavakit's select feature for a transformers strategy; ValueError when none matches."""
        if strategy == "default" and not self.has_cls:
            raise ValueError(
                f"strategy 'default' drops the first feature of a tower without a CLS token "
                f"({self.vision_model_type}); llavakit cannot select features that way"
            )
        return "patch" if strategy == "default" or not self.has_cls else "cls_patch"


FAMILIES = (
    TowerFamily("clip", CLIPVisionModel, ("clip", "clip_vision_model"), has_cls=True),
    TowerFamily("siglip", SiglipVisionModel, ("siglip", "siglip_vision_model"), has_cls=False),
)


def known_model_types() -> list[str]:
    return [model_type for family in FAMILIES for model_type in family.model_types]


def family_for(model_type: str) -> TowerFamily:
    """The family whose checkpoints declare `model_type`."""
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    raise UnknownTowerFamily(
        f"vision tower model_type {model_type!r} is not supported; supported: "
        f"{', '.join(known_model_types())}"
    )
