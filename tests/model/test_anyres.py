"""AnyRes packing against transformers' own LlavaNext / LlavaOnevision models (tiny, random).

The same per-tile features go through their `pack_image_features` and through ours; the outputs
must be identical, and their length must equal the count the processor uses for placeholders.
"""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    Qwen2Config,
)
from transformers.models.llava_next.modeling_llava_next import unpad_image

from llavakit.image import anyres_tiles
from llavakit.image_config import ImageProcessorConfig
from llavakit.image_tokens import anyres_feature_count, anyres_grid_shape, parse_grid_pinpoints
from llavakit.model.anyres import pack_anyres_features, unpad_features

TILE, PATCH = 32, 8
SIDE = TILE // PATCH  # patches per tile side
PINPOINTS = [(32, 64), (64, 32), (64, 64), (96, 32), (32, 96)]  # LLaVA-NeXT's set at 32 px tiles
# wide, tall, square, tiny, large, near-square, extreme strips
SIZES = [(48, 100), (100, 48), (50, 50), (3, 5), (300, 200), (61, 64), (10, 200), (400, 9)]


def vision_config() -> CLIPVisionConfig:
    return CLIPVisionConfig(
        image_size=TILE,
        patch_size=PATCH,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
    )


@pytest.fixture(scope="module")
def llava_next():
    torch.manual_seed(0)
    text = LlamaConfig(
        vocab_size=64,
        hidden_size=24,
        intermediate_size=48,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    config = LlavaNextConfig(
        vision_config=vision_config(),
        text_config=text,
        image_grid_pinpoints=[list(p) for p in PINPOINTS],
        image_token_index=63,
    )
    return LlavaNextForConditionalGeneration(config).eval()


def tile_features(size_hw, pinpoints, dim, seed) -> torch.Tensor:
    """Random per-crop features [1 + rows*cols, SIDE*SIDE, dim] for an image of this size."""
    rows, cols = anyres_grid_shape(size_hw, pinpoints, TILE)
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1 + rows * cols, SIDE * SIDE, dim, generator=generator)


@pytest.mark.parametrize("size_hw", SIZES)
def test_packing_equals_llava_next(llava_next, size_hw):
    newline = llava_next.model.image_newline.detach()
    features = tile_features(size_hw, PINPOINTS, newline.shape[0], seed=sum(size_hw))
    (theirs,), lengths = llava_next.model.pack_image_features(
        [features], torch.tensor([size_hw]), "default", image_newline=newline
    )
    ours = pack_anyres_features(features, size_hw, PINPOINTS, TILE, newline)
    assert torch.equal(ours, theirs)
    assert ours.shape[0] == lengths.item() == anyres_feature_count(size_hw, PINPOINTS, TILE, SIDE)
    # Without a newline vector the rows are simply concatenated.
    plain = pack_anyres_features(features, size_hw, PINPOINTS, TILE, None)
    (theirs_plain,), _ = llava_next.model.pack_image_features(
        [features], torch.tensor([size_hw]), "default"
    )
    assert torch.equal(plain, theirs_plain)
    assert plain.shape[0] == anyres_feature_count(size_hw, PINPOINTS, TILE, SIDE, newline=False)


def test_pixels_to_packed_features_equal_llava_next(llava_next):
    """Our tiles through their tower and projector, then our packing, equal their whole path."""
    config = ImageProcessorConfig(size=TILE, crop_size=TILE)
    rng = np.random.default_rng(0)
    for size_hw in [(40, 90), (90, 40), (70, 70)]:
        image = Image.fromarray(rng.integers(0, 256, (*size_hw, 3), dtype=np.uint8))
        pixels = torch.from_numpy(anyres_tiles(image, config, PINPOINTS))  # [1 + n, 3, 32, 32]
        with torch.no_grad():
            output = llava_next.model.get_image_features(
                pixel_values=pixels[None], image_sizes=torch.tensor([size_hw])
            )
            hidden = llava_next.model.vision_tower(pixels, output_hidden_states=True).hidden_states
            projected = llava_next.model.multi_modal_projector(hidden[-2][:, 1:])  # drop CLS
            ours = pack_anyres_features(
                projected, size_hw, PINPOINTS, TILE, llava_next.model.image_newline
            )
        torch.testing.assert_close(ours, output.pooler_output[0], rtol=0, atol=1e-6)


def test_max_num_patches_cap_equals_llava_onevision():
    torch.manual_seed(0)
    text = Qwen2Config(
        vocab_size=64,
        hidden_size=24,
        intermediate_size=48,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    pinpoints = parse_grid_pinpoints("(1x1),...,(3x3)", TILE)
    config = LlavaOnevisionConfig(
        vision_config=vision_config(),
        text_config=text,
        image_grid_pinpoints=[list(p) for p in pinpoints],
        image_token_index=63,
    )
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    newline = model.model.image_newline.detach()
    capped_somewhere = False
    for cap in (1, 2, 4):
        for size_hw in SIZES + [(96, 96), (90, 60)]:
            features = tile_features(size_hw, pinpoints, newline.shape[0], seed=cap)
            (theirs,), _ = model.model.pack_image_features(
                [features],
                torch.tensor([size_hw]),
                newline,
                vision_aspect_ratio=f"anyres_max_{cap}",
            )
            ours = pack_anyres_features(
                features, size_hw, pinpoints, TILE, newline, max_num_patches=cap
            )
            torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
            count = anyres_feature_count(size_hw, pinpoints, TILE, SIDE, max_num_patches=cap)
            assert ours.shape[0] == count
            uncapped = anyres_feature_count(size_hw, pinpoints, TILE, SIDE)
            capped_somewhere |= count < uncapped
    assert capped_somewhere  # the cases above really exercise the interpolation


def test_feature_count_equals_packed_length_for_many_shapes():
    rng = np.random.default_rng(1)
    pinpoints = parse_grid_pinpoints("(1x1),...,(4x4)", TILE)
    for height, width in rng.integers(1, 600, size=(60, 2)).tolist():
        features = tile_features((height, width), pinpoints, 4, seed=height)
        for cap in (None, 2):
            packed = pack_anyres_features(
                features, (height, width), pinpoints, TILE, torch.zeros(4), max_num_patches=cap
            )
            count = anyres_feature_count(
                (height, width), pinpoints, TILE, SIDE, max_num_patches=cap
            )
            assert packed.shape == (count, 4)


@pytest.mark.parametrize(
    "size_hw, grid_hw, expected_hw",
    [((100, 300), (8, 16), (6, 16)), ((300, 100), (16, 8), (16, 6)), ((100, 200), (8, 16), (8, 16)),
     ((50, 50), (8, 16), (8, 8)), ((77, 13), (24, 8), (24, 4))],
)  # fmt: skip
def test_unpad_features_matches_transformers(size_hw, grid_hw, expected_hw):
    grid = torch.randn(3, *grid_hw)
    ours = unpad_features(grid, size_hw)
    assert tuple(ours.shape[1:]) == expected_hw
    assert torch.equal(ours, unpad_image(grid, list(size_hw)))


def test_packing_errors_are_explicit():
    features = tile_features((50, 100), PINPOINTS, 4, seed=0)  # 1 + 1x2 crops
    with pytest.raises(ValueError, match=r"50x100 needs 1 \+ 1x2 crops, got 2"):
        pack_anyres_features(features[:2], (50, 100), PINPOINTS, TILE, None)
    with_cls = torch.randn(3, SIDE * SIDE + 1, 4)
    with pytest.raises(ValueError, match="CLS token"):
        pack_anyres_features(with_cls, (50, 100), PINPOINTS, TILE, None)
