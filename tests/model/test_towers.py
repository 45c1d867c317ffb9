"""The vision-tower family registry: one entry per family, asked by tower, processor and export."""

import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel

from llavakit.model.towers import FAMILIES, UnknownTowerFamily, family_for, known_model_types
from llavakit.model.vision import VisionTower


def test_every_model_type_finds_its_family_and_unknown_ones_are_refused():
    for family in FAMILIES:
        for model_type in family.model_types:
            assert family_for(model_type) is family
    assert "clip_vision_model" in known_model_types()
    with pytest.raises(UnknownTowerFamily, match="dinov2"):
        family_for("dinov2")


@pytest.mark.parametrize(
    ("select_feature", "clip", "siglip"), [("patch", 16, 16), ("cls_patch", 17, 16)]
)
def test_feature_counts_follow_the_cls_token(select_feature, clip, siglip):
    assert family_for("clip").feature_count(4, select_feature) == clip
    assert family_for("siglip").feature_count(4, select_feature) == siglip


def test_transformers_strategies_round_trip():
    for family in FAMILIES:
        for feature in ("patch", "cls_patch"):
            strategy, additional = family.hf_strategy(feature)
            assert additional == int(family.has_cls)
            expected = feature if family.has_cls else "patch"
            assert family.select_feature_for(strategy) == expected
    with pytest.raises(ValueError, match="without a CLS token"):
        family_for("siglip").select_feature_for("default")


def test_the_tower_counts_what_its_encoder_outputs():
    small = dict(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        image_size=16, patch_size=4,
    )  # fmt: skip
    for encoder in (
        CLIPVisionModel(CLIPVisionConfig(**small)),
        SiglipVisionModel(SiglipVisionConfig(**small)),
    ):
        for feature in ("patch", "cls_patch"):
            tower = VisionTower(encoder.eval(), select_feature=feature)
            out = tower(torch.zeros(1, 3, 16, 16))
            assert out.shape[1] == tower.num_features
