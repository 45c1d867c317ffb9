"""ImageTokens: the one count of tokens an image becomes, for plain and AnyRes models."""

import pytest

from llavakit.config import ModelConfig
from llavakit.image_tokens import ImageTokens, anyres_feature_count, has_image_newline

PINPOINTS = [(336, 672), (672, 336), (672, 672)]


def test_one_crop_models_count_the_tower_features_whatever_the_size():
    tokens = ImageTokens.for_model(ModelConfig(image_aspect_ratio="pad"), 336, 14, 576)
    assert tokens.pinpoints is None and not tokens.newline
    assert tokens.count() == tokens.count((10, 2000)) == tokens.fewest == 576


@pytest.mark.parametrize("newline", [True, False])
def test_anyres_counts_follow_the_grid_and_the_newline(newline):
    config = ModelConfig(image_aspect_ratio="anyres", image_grid_pinpoints=PINPOINTS)
    assert has_image_newline(config)
    tokens = ImageTokens.for_model(config, 336, 14, 576, newline=newline)
    expected = anyres_feature_count((672, 672), PINPOINTS, 336, 24, newline=newline)
    assert tokens.count((672, 672)) == expected == 576 + 48 * (48 + newline)
    assert tokens.fewest == 576
    with pytest.raises(ValueError, match="image size"):
        tokens.count()
