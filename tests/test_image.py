"""Image loading, LLaVA aspect handling and AnyRes geometry, checked against transformers' own
CLIPImageProcessor / LlavaNextImageProcessor (the PIL backends, which need no torchvision)."""

import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from transformers import CLIPImageProcessor
from transformers.image_processing_utils import select_best_resolution as hf_select_best_resolution
from transformers.models.llava_next.image_processing_pil_llava_next import (
    LlavaNextImageProcessorPil,
)

from llavakit.image import (
    ImageLoadError,
    anyres_tiles,
    expand_to_square,
    load_image,
    preprocess,
    resize_and_center_crop,
    to_pixel_values,
)
from llavakit.image_config import CLIP_MEAN, CLIP_STD, ImageConfigError, ImageProcessorConfig
from llavakit.image_tokens import (
    anyres_feature_count,
    anyres_grid_shape,
    capped_grid_shape,
    parse_grid_pinpoints,
    select_best_resolution,
    unpadded_grid_shape,
)

NEXT_PINPOINTS = [(336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)]
SIGLIP = ImageProcessorConfig(
    (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), size=64, crop_size=None, do_center_crop=False
)


def random_image(height: int, width: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but which carries almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


# ---- loading -------------------------------------------------------------------------------------
def test_rgba_and_la_are_composited_on_white(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 0)  # fully transparent red -> white
    rgba[0, 1] = (0, 0, 0, 255)  # opaque black stays black
    rgba[1, 0] = (0, 0, 0, 128)  # half-transparent black -> mid grey
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    pixels = np.asarray(load_image(path))
    assert load_image(path).mode == "RGB"
    assert tuple(pixels[0, 0]) == (255, 255, 255)
    assert tuple(pixels[0, 1]) == (0, 0, 0)
    assert all(abs(int(v) - 127) <= 1 for v in pixels[1, 0])

    la = Image.fromarray(np.array([[[0, 0], [0, 255]]], dtype=np.uint8), "LA")
    pixels = np.asarray(load_image(encoded(la, "PNG")))
    assert tuple(pixels[0, 0]) == (255, 255, 255) and tuple(pixels[0, 1]) == (0, 0, 0)


def test_palette_with_transparency_and_plain_palette():
    palette = Image.new("P", (2, 1))
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.putpixel((1, 0), 1)
    plain = np.asarray(load_image(encoded(palette, "PNG")))
    assert plain.tolist() == [[[10, 20, 30], [200, 100, 50]]]
    transparent = np.asarray(load_image(encoded(palette, "PNG", transparency=0)))
    assert transparent.tolist() == [[[255, 255, 255], [200, 100, 50]]]


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    image = load_image(encoded(cmyk, "JPEG", quality=95))
    red, green, blue = np.asarray(image).reshape(-1, 3).mean(axis=0)
    assert image.mode == "RGB" and red > 240 and green < 15 and blue < 15


def test_16_bit_grayscale_is_scaled_not_clipped():
    gray16 = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16))
    assert gray16.mode == "I;16"
    pixels = np.asarray(load_image(encoded(gray16, "PNG")))
    assert pixels[0, :, 0].tolist() == [0, 128, 255]
    assert (pixels[..., 0] == pixels[..., 2]).all()


def test_exif_orientation_is_applied():
    array = np.zeros((16, 32, 3), dtype=np.uint8)
    array[:, :16] = (255, 0, 0)  # left half red
    array[:, 16:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    image = load_image(encoded(Image.fromarray(array), "JPEG", exif=exif.tobytes(), quality=95))
    assert image.size == (16, 32)  # (width, height): portrait after rotation
    top, bottom = np.asarray(image)[2, 8], np.asarray(image)[-3, 8]
    assert top[0] > 200 and top[2] < 60  # the stored left edge is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_every_kind_of_source(tmp_path):
    image = random_image(5, 7)
    path = tmp_path / "x.png"
    image.save(path)
    expected = np.asarray(image)
    for source in (path, str(path), path.read_bytes(), io.BytesIO(path.read_bytes()), image):
        assert np.array_equal(np.asarray(load_image(source)), expected)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_names_the_path(tmp_path, fmt):
    data = encoded(random_image(64, 64), fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match=rf"{path}.*(truncated|corrupt)"):
        load_image(path)


def test_corrupt_and_missing_files_name_the_path(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"this is not an image at all")
    with pytest.raises(ImageLoadError, match=rf"{bad}: not a recognised image"):
        load_image(bad)
    with pytest.raises(ImageLoadError, match=r"<bytes>"):
        load_image(b"\x00\x01garbage")
    with pytest.raises(ImageLoadError, match=rf"{tmp_path / 'nope.png'}: no such file"):
        load_image(tmp_path / "nope.png")


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    with pytest.raises(ImageLoadError, match=r"10x10 = 100 pixels exceeds the limit of 99"):
        load_image(random_image(10, 10), max_pixels=99)
    # 100M pixels declared, a few bytes of data: decoding first would report truncation instead.
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(20_000, 5_000))
    with pytest.raises(ImageLoadError, match=rf"{bomb}: 20000x5000 .*decompression bomb"):
        load_image(bomb)
    # Beyond Pillow's own hard limit (2 x MAX_IMAGE_PIXELS) it is still our error type.
    with pytest.raises(ImageLoadError, match=r"<bytes>: too large"):
        load_image(png_header_only(30_000, 30_000))


# ---- processor config ----------------------------------------------------------------------------
def test_pad_colour_is_clip_mean_in_0_255():
    assert ImageProcessorConfig().pad_color == (122, 116, 104)
    assert SIGLIP.pad_color == (127, 127, 127)


@pytest.mark.parametrize(
    "data, expected",
    [
        (  # openai/clip-vit-large-patch14-336 (legacy integer sizes)
            {"crop_size": 336, "do_center_crop": True, "do_normalize": True, "do_resize": True,
             "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": list(CLIP_MEAN),
             "image_std": list(CLIP_STD), "resample": 3, "size": 336},
            ImageProcessorConfig(CLIP_MEAN, CLIP_STD, 336, 336, 3, 1 / 255, True),
        ),
        (  # current CLIP format
            {"size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224},
             "do_center_crop": True, "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD),
             "resample": 3, "rescale_factor": 1 / 255},
            ImageProcessorConfig(CLIP_MEAN, CLIP_STD, 224, 224, 3, 1 / 255, True),
        ),
        (  # google/siglip-so400m-patch14-384
            {"do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.5] * 3,
             "image_processor_type": "SiglipImageProcessor", "image_std": [0.5] * 3, "resample": 3,
             "rescale_factor": 0.00392156862745098, "size": {"height": 384, "width": 384}},
            ImageProcessorConfig((0.5,) * 3, (0.5,) * 3, 384, None, 3, 0.00392156862745098, False),
        ),
    ],
)  # fmt: skip
def test_config_reads_real_checkpoint_formats_and_round_trips(tmp_path, data, expected):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(data))
    config = ImageProcessorConfig.from_pretrained(tmp_path)
    assert config == expected
    assert ImageProcessorConfig.from_dict(config.to_dict()) == config
    config.save_pretrained(tmp_path / "saved")
    assert ImageProcessorConfig.from_pretrained(tmp_path / "saved") == config


def test_config_errors_name_folder_and_field(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path} has no preprocessor_config.json"):
        ImageProcessorConfig.from_pretrained(tmp_path)
    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps({"size": {"shortest_edge": 336}, "image_std": [0.5] * 3}))
    with pytest.raises(ImageConfigError, match=rf"{path}: missing field 'image_mean'"):
        ImageProcessorConfig.from_pretrained(tmp_path)
    path.write_text(
        json.dumps(
            {"size": {"height": 336, "width": 448}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
        )
    )
    with pytest.raises(ImageConfigError, match=rf"{path}: size 336x448 is not square"):
        ImageProcessorConfig.from_pretrained(tmp_path)
    path.write_text(json.dumps({"size": 336, "image_mean": [0.5] * 2, "image_std": [0.5] * 3}))
    with pytest.raises(ImageConfigError, match=r"image_mean needs 3 values"):
        ImageProcessorConfig.from_pretrained(tmp_path)
    path.write_text("{not json")
    with pytest.raises(ImageConfigError, match=rf"{path} is not valid JSON"):
        ImageProcessorConfig.from_pretrained(tmp_path)


# ---- parity with transformers' CLIPImageProcessor ------------------------------------------------
def hf_processor(config: ImageProcessorConfig, folder) -> CLIPImageProcessor:
    """transformers' processor built from the file we write: also proves the file is readable."""
    config.save_pretrained(folder)
    return CLIPImageProcessor.from_pretrained(folder)


SIZES = [(48, 64), (64, 48), (30, 11), (40, 40), (101, 99), (7, 120), (200, 31)]


@pytest.mark.parametrize(
    "config", [ImageProcessorConfig(size=40, crop_size=40), SIGLIP], ids=["clip", "siglip"]
)
def test_crop_and_pad_match_clip_image_processor(tmp_path, config):
    hf = hf_processor(config, tmp_path)
    for seed, (height, width) in enumerate(SIZES):
        image = random_image(height, width, seed)
        theirs = hf(image, return_tensors="np")["pixel_values"][0]
        ours = preprocess(image, config, "crop")
        assert ours.dtype == np.float32 and ours.shape == (3, config.tile_size, config.tile_size)
        np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
        padded = expand_to_square(image, config.pad_color)
        theirs = hf(padded, return_tensors="np")["pixel_values"][0]
        np.testing.assert_allclose(preprocess(image, config, "pad"), theirs, atol=1e-5, rtol=0)


def test_resize_matches_a_square_resize_processor(tmp_path):
    config = ImageProcessorConfig(size=40, crop_size=40)
    square = ImageProcessorConfig(
        config.image_mean, config.image_std, 40, None, do_center_crop=False
    )
    hf = hf_processor(square, tmp_path)
    image = random_image(30, 90)
    theirs = hf(image, return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose(preprocess(image, config, "resize"), theirs, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"'anyres' \(use anyres_tiles"):
        preprocess(image, config, "anyres")


def test_expand_to_square_centres_the_image_on_the_fill():
    fill = ImageProcessorConfig().pad_color
    wide = np.asarray(expand_to_square(Image.new("RGB", (5, 2), (255, 0, 0)), fill))
    assert wide.shape == (5, 5, 3)
    assert [tuple(wide[row, 0]) for row in range(5)] == [fill, (255, 0, 0), (255, 0, 0), fill, fill]
    tall = np.asarray(expand_to_square(Image.new("RGB", (2, 4), (0, 0, 255)), fill))
    assert tall.shape == (4, 4, 3)
    assert [tuple(tall[0, col]) for col in range(4)] == [fill, (0, 0, 255), (0, 0, 255), fill]
    # After normalisation the padding is (close to) zero: that is why the mean colour is used.
    pixels = to_pixel_values(Image.new("RGB", (1, 1), fill), ImageProcessorConfig())
    assert np.abs(pixels).max() < 0.02


def test_resize_and_center_crop_output_is_tile_square():
    config = ImageProcessorConfig(size=48, crop_size=32)
    assert resize_and_center_crop(random_image(20, 90), config).size == (32, 32)
    assert resize_and_center_crop(random_image(90, 20), SIGLIP).size == (64, 64)
    with pytest.raises(ImageConfigError, match="larger than the resized shortest edge"):
        ImageProcessorConfig(size=32, crop_size=48)


# ---- AnyRes geometry -----------------------------------------------------------------------------
def test_parse_grid_pinpoints_forms():
    assert parse_grid_pinpoints([[336, 672], [672, 336]], 336) == [(336, 672), (672, 336)]
    assert parse_grid_pinpoints("[(336, 672), (672, 336)]", 336) == [(336, 672), (672, 336)]
    assert parse_grid_pinpoints("(1x1),...,(2x3)", 10) == [
        (10, 10), (10, 20), (10, 30), (20, 10), (20, 20), (20, 30)
    ]  # fmt: skip
    assert len(parse_grid_pinpoints("(1x1),...,(6x6)", 384)) == 36
    with pytest.raises(ValueError, match="multiples of the tile size 336"):
        parse_grid_pinpoints([[336, 600]], 336)
    with pytest.raises(ValueError, match="expected"):
        parse_grid_pinpoints("three by three", 336)
    with pytest.raises(ValueError, match="non-empty list"):
        parse_grid_pinpoints([], 336)


@pytest.mark.parametrize(
    "size_hw, best",
    [
        ((100, 100), (336, 672)),  # tie on effective and wasted area: the first candidate wins
        ((1000, 500), (672, 336)),  # same effective area as (1008, 336): less waste wins
        ((336, 1008), (336, 1008)),  # exact fit
        ((400, 1200), (336, 1008)),  # larger than every canvas: keep the most pixels
        ((2000, 2000), (672, 672)),
        ((500, 700), (672, 672)),
        ((700, 300), (1008, 336)),  # a taller canvas keeps every pixel
    ],
)
def test_select_best_resolution_table(size_hw, best):
    assert select_best_resolution(size_hw, NEXT_PINPOINTS) == best


def test_select_best_resolution_agrees_with_transformers():
    rng = np.random.default_rng(0)
    pinpoints = parse_grid_pinpoints("(1x1),...,(3x3)", 384)
    for height, width in rng.integers(1, 2500, size=(300, 2)).tolist():
        for candidates in (NEXT_PINPOINTS, pinpoints):
            expected = hf_select_best_resolution((height, width), candidates)
            assert select_best_resolution((height, width), candidates) == tuple(expected)


def test_grid_shape_and_unpadded_shapes():
    assert anyres_grid_shape((100, 100), NEXT_PINPOINTS, 336) == (1, 2)
    assert anyres_grid_shape((1000, 500), NEXT_PINPOINTS, 336) == (2, 1)
    assert anyres_grid_shape((300, 2000), NEXT_PINPOINTS, 336) == (1, 3)
    assert anyres_grid_shape((2000, 2000), NEXT_PINPOINTS, 336) == (2, 2)
    assert unpadded_grid_shape((100, 300), (8, 16)) == (
        6,
        16,
    )  # 5.33 rows seen; padding is cut evenly
    assert unpadded_grid_shape((300, 100), (16, 8)) == (16, 6)
    assert unpadded_grid_shape((100, 200), (8, 16)) == (8, 16)  # same aspect: nothing to cut
    assert unpadded_grid_shape((336, 336), (24, 48)) == (24, 24)
    assert unpadded_grid_shape((10, 1000), (8, 24)) == (
        0,
        24,
    )  # extreme strip: every row is padding


def test_anyres_feature_count_by_hand():
    # 672x672 image, 24 patches per side: 2x2 tiles, nothing unpadded, 48 rows of 48 + newline.
    assert anyres_feature_count((672, 672), NEXT_PINPOINTS, 336, 24) == 576 + 48 * 49
    assert anyres_feature_count((672, 672), NEXT_PINPOINTS, 336, 24, newline=False) == 576 + 48 * 48
    # cap at 1 tile's worth: 48x48 -> ratio 2 -> 24x24
    assert capped_grid_shape((48, 48), 24, 1) == (24, 24)
    assert capped_grid_shape((26, 24), 24, 1) == (26, 24)  # within 10%: kept
    assert (
        anyres_feature_count((672, 672), NEXT_PINPOINTS, 336, 24, max_num_patches=1)
        == 576 + 24 * 25
    )


@pytest.mark.parametrize("size_hw", [(48, 100), (100, 48), (50, 50), (3, 5), (200, 70), (31, 97)])
def test_anyres_tiles_match_llava_next_image_processor(size_hw):
    pinpoints = [(32, 64), (64, 32), (64, 64), (96, 32), (32, 96)]
    config = ImageProcessorConfig(size=32, crop_size=32)
    hf = LlavaNextImageProcessorPil(
        size={"shortest_edge": 32},
        crop_size={"height": 32, "width": 32},
        image_grid_pinpoints=[list(p) for p in pinpoints],
    )
    image = random_image(*size_hw, seed=sum(size_hw))
    ours = anyres_tiles(image, config, pinpoints)
    rows, cols = anyres_grid_shape(size_hw, pinpoints, 32)
    assert ours.shape == (1 + rows * cols, 3, 32, 32) and ours.dtype == np.float32
    theirs = hf(image, return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)


def test_anyres_tiles_refuse_pinpoints_of_another_tile_size():
    config = ImageProcessorConfig(size=32, crop_size=32)
    with pytest.raises(ValueError, match="not a multiple of the tile size 32"):
        anyres_tiles(random_image(40, 40), config, [(48, 48)])


def test_single_number_mean_and_std_apply_to_all_channels():
    data = {"size": {"height": 64, "width": 64}, "image_mean": 0.5, "image_std": 0.25}
    config = ImageProcessorConfig.from_dict(data)
    assert config.image_mean == (0.5,) * 3 and config.image_std == (0.25,) * 3
