"""Images in, pixel values out: safe loading, LLaVA's aspect handling and LLaVA-NeXT's AnyRes tiles.

Everything here is Pillow + numpy so that data loading never needs torch or torchvision. The resize,
crop, rescale and normalise steps reproduce transformers' `CLIPImageProcessor` (and the AnyRes
tiling reproduces `LlavaNextImageProcessor`) value for value, so a checkpoint trained here sees the
same pixels when it is served by transformers, vLLM or SGLang.

Conventions: sizes are (height, width) unless a name says otherwise; PIL's own `.size` is (width,
height). Pixel arrays are float32 [3, H, W], or [n_crops, 3, S, S] for AnyRes.

The vision tower's preprocessor config lives in `image_config.py`; the AnyRes grid geometry and the
count of tokens an image becomes in `image_tokens.py`.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from llavakit.image_config import ImageProcessorConfig
from llavakit.image_tokens import select_best_resolution

ASPECT_MODES = ("pad", "crop", "resize")

ImageSource = str | Path | bytes | BinaryIO | Image.Image


# ---- loading -------------------------------------------------------------------------------------
class ImageLoadError(ValueError):
    """An image cannot be used; the message names the file (or `<bytes>`) and the reason."""


def _describe(source: Any) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, (bytes, bytearray)):
        return "<bytes>"
    if isinstance(source, Image.Image):
        return "<PIL image>"
    return str(getattr(source, "name", "<file object>"))


def load_image(source: ImageSource, max_pixels: int = 89_478_485) -> Image.Image:
    """Open an image from a path, bytes, a binary file object or a PIL image, as upright RGB.

    The pixel count is checked from the header, before any pixel is decoded, so a small file that
    declares a gigantic canvas (a decompression bomb) costs nothing. Pillow refuses on its own
    beyond twice its global MAX_IMAGE_PIXELS; that global is left alone, so `max_pixels` can lower
    the limit but not raise it past Pillow's. Decoding errors, truncated files and unsupported modes
    all become `ImageLoadError` naming the source.
    """
    name = _describe(source)
    if isinstance(source, (str, Path)) and not Path(source).is_file():
        raise ImageLoadError(f"cannot load image {name}: no such file")
    try:
        if isinstance(source, Image.Image):
            _check_pixels(source, max_pixels, name)
            return _upright_rgb(source, name)
        if isinstance(source, (bytes, bytearray)):
            source = io.BytesIO(source)
        with warnings.catch_warnings():
            # Our own limit below gives the clearer message; Pillow's warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                _check_pixels(image, max_pixels, name)
                image.load()
                return _upright_rgb(image, name)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageLoadError(f"cannot load image {name}: too large ({error})") from error
    except UnidentifiedImageError as error:
        raise ImageLoadError(f"cannot load image {name}: not a recognised image file") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        # Pillow reports truncated or corrupt data as OSError/SyntaxError/ValueError/EOFError.
        raise ImageLoadError(f"cannot load image {name}: corrupt or truncated ({error})") from error


def _check_pixels(image: Image.Image, max_pixels: int, name: str) -> None:
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageLoadError(f"cannot load image {name}: empty canvas {width}x{height}")
    if width * height > max_pixels:
        raise ImageLoadError(
            f"cannot load image {name}: {width}x{height} = {width * height} pixels exceeds the "
            f"limit of {max_pixels} (possible decompression bomb)"
        )


def _upright_rgb(image: Image.Image, name: str) -> Image.Image:
    """Apply the EXIF orientation, then convert any mode to 8-bit RGB (transparency onto white)."""
    try:
        image = ImageOps.exif_transpose(image)
    except (ValueError, TypeError, OSError, SyntaxError) as error:
        raise ImageLoadError(f"cannot load image {name}: unreadable EXIF data ({error})") from error
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        image = _high_depth_to_gray8(image)
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    try:
        if has_alpha:
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return image.convert("RGB")
    except ValueError as error:
        raise ImageLoadError(f"cannot load image {name}: mode {image.mode} ({error})") from error


def _high_depth_to_gray8(image: Image.Image) -> Image.Image:
    """16-bit (or 32-bit int/float) grayscale to 8 bits by scaling, not clipping.

    Pillow's own conversion clips every value above 255 to white, which turns a normal 16-bit scan
    into a blank page. Values that already fit in 0..255 are kept as they are.
    """
    values = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16") or values.max(initial=0.0) > 255.0:
        values = values / 257.0  # 65535 -> 255
    gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(gray)  # 2-D uint8 -> mode "L"


# ---- LLaVA / LLaVA-1.5 preprocessing -------------------------------------------------------------
def expand_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """LLaVA-1.5's `pad`: centre the image on a `fill`-coloured square of its longer side."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def resize_and_center_crop(image: Image.Image, cfg: ImageProcessorConfig) -> Image.Image:
    """The tower's own geometry: shortest edge to `size` then a centre crop (CLIP), or a square
    resize (SigLIP). The output is always `cfg.tile_size` square."""
    width, height = image.size
    if not cfg.do_center_crop:
        return image.resize((cfg.size, cfg.size), resample=cfg.resample)
    # Same rounding as transformers: the long side is truncated, not rounded.
    if width <= height:
        new_width, new_height = cfg.size, int(cfg.size * height / width)
    else:
        new_width, new_height = int(cfg.size * width / height), cfg.size
    image = image.resize((new_width, new_height), resample=cfg.resample)
    crop = cfg.tile_size  # <= size (checked by the config), so the crop lies inside the image
    top, left = (new_height - crop) // 2, (new_width - crop) // 2
    return image.crop((left, top, left + crop, top + crop))


def to_pixel_values(image: Image.Image, cfg: ImageProcessorConfig) -> np.ndarray:
    """Rescale and normalise an RGB image: float32 [3, H, W]."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)  # [3, H, W]
    scaled = (array.astype(np.float64) * cfg.rescale_factor).astype(np.float32)
    mean = np.asarray(cfg.image_mean, dtype=np.float32)[:, None, None]
    std = np.asarray(cfg.image_std, dtype=np.float32)[:, None, None]
    return (scaled - mean) / std


def preprocess(image: Image.Image, cfg: ImageProcessorConfig, aspect: str = "pad") -> np.ndarray:
    """One image to one crop for the tower: float32 [3, S, S] with S = cfg.tile_size.

    aspect: `pad` (LLaVA-1.5: pad to a square with the mean colour, so nothing is cut off),
    `crop` (the tower's default: shortest edge + centre crop), `resize` (squash to a square).
    AnyRes images go through `anyres_tiles` instead.
    """
    if aspect == "pad":
        image = resize_and_center_crop(expand_to_square(image, cfg.pad_color), cfg)
    elif aspect == "crop":
        image = resize_and_center_crop(image, cfg)
    elif aspect == "resize":
        image = image.resize((cfg.tile_size, cfg.tile_size), resample=cfg.resample)
    else:
        hint = " (use anyres_tiles for AnyRes)" if aspect == "anyres" else ""
        raise ValueError(
            f"unknown image aspect mode {aspect!r}{hint}; known: {', '.join(ASPECT_MODES)}"
        )
    return to_pixel_values(image, cfg)


# ---- AnyRes (LLaVA-NeXT) tiles -------------------------------------------------------------------
def anyres_tiles(
    image: Image.Image, cfg: ImageProcessorConfig, pinpoints: list[tuple[int, int]]
) -> np.ndarray:
    """AnyRes crops of one RGB image: float32 [1 + rows*cols, 3, S, S], the whole image first.

    The image is resized (aspect kept) to fit the best canvas, centred on black padding, and cut
    into S x S tiles in row-major order; the base crop is the whole image squashed to a square.
    Each crop then goes through the tower's own resize/crop and normalisation.
    """
    tile = cfg.tile_size
    width, height = image.size
    canvas_h, canvas_w = select_best_resolution((height, width), pinpoints)
    if canvas_h % tile or canvas_w % tile:
        raise ValueError(
            f"grid pinpoint {canvas_h}x{canvas_w} is not a multiple of the tile size {tile} "
            "(parse the pinpoints with the vision tower's image size)"
        )
    # Fit inside the canvas keeping the aspect; same float expressions as transformers.
    scale_w, scale_h = canvas_w / width, canvas_h / height
    if scale_w < scale_h:
        new_h, new_w = min(math.ceil(height * scale_w), canvas_h), canvas_w
    else:
        new_h, new_w = canvas_h, min(math.ceil(width * scale_h), canvas_w)
    canvas = Image.new("RGB", (canvas_w, canvas_h), (0, 0, 0))
    canvas.paste(
        image.resize((new_w, new_h), resample=cfg.resample),
        ((canvas_w - new_w) // 2, (canvas_h - new_h) // 2),
    )
    crops = [image.resize((cfg.size, cfg.size), resample=cfg.resample)]
    crops += [
        canvas.crop((left, top, left + tile, top + tile))
        for top in range(0, canvas_h, tile)
        for left in range(0, canvas_w, tile)
    ]
    return np.stack([to_pixel_values(resize_and_center_crop(c, cfg), cfg) for c in crops])
