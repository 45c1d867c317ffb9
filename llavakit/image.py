"""Images in, pixel values out: safe loading, LLaVA's aspect handling and LLaVA-NeXT's AnyRes tiles.

Everything here is Pillow + numpy so that data loading never needs torch or torchvision. The resize,
crop, rescale and normalise steps reproduce transformers' `CLIPImageProcessor` (and the AnyRes
tiling reproduces `LlavaNextImageProcessor`) value for value, so a checkpoint trained here sees the
same pixels when it is served by transformers, vLLM or SGLang.

Conventions: sizes are (height, width) unless a name says otherwise; PIL's own `.size` is (width,
height). Pixel arrays are float32 [3, H, W], or [n_crops, 3, S, S] for AnyRes.
"""

from __future__ import annotations

import ast
import io
import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

PREPROCESSOR_FILE = "preprocessor_config.json"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
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


# ---- the vision tower's processor config ---------------------------------------------------------
class ImageConfigError(ValueError):
    """A preprocessor config cannot be used; the message names the folder/field."""


@dataclass
class ImageProcessorConfig:
    """How the vision tower wants its pixels: what a CLIP/SigLIP `preprocessor_config.json` says.

    Defaults are those of CLIP ViT-L/14-336, LLaVA-1.5's tower.
    """

    image_mean: tuple[float, float, float] = CLIP_MEAN
    """Per-channel mean subtracted after rescaling (RGB order); also gives LLaVA's pad colour."""
    image_std: tuple[float, float, float] = CLIP_STD
    """Per-channel standard deviation the centred values are divided by."""
    size: int = 336
    """With centre crop: the shortest edge is resized to this. Without: the side of the square the
    image is resized to (SigLIP)."""
    crop_size: int | None = 336
    """Side of the centre crop; None means `size`. Ignored when do_center_crop is False."""
    resample: int = int(Image.Resampling.BICUBIC)
    """PIL resampling filter used by every resize (3 = bicubic, CLIP's and SigLIP's choice)."""
    rescale_factor: float = 1 / 255
    """Multiplier from 0..255 pixel values to the range the mean/std refer to."""
    do_center_crop: bool = True
    """Resize the shortest edge then crop the centre (CLIP), or resize to a square (SigLIP)."""

    def __post_init__(self) -> None:
        self.image_mean = tuple(float(v) for v in self.image_mean)
        self.image_std = tuple(float(v) for v in self.image_std)
        for field_name in ("image_mean", "image_std"):
            if len(getattr(self, field_name)) != 3:
                raise ImageConfigError(
                    f"{field_name} needs 3 values (RGB), got {getattr(self, field_name)}"
                )
        if any(v <= 0 for v in self.image_std):
            raise ImageConfigError(f"image_std values must be positive, got {self.image_std}")
        if self.size <= 0 or (self.crop_size is not None and self.crop_size <= 0):
            raise ImageConfigError(
                f"size and crop_size must be positive, got {self.size}, {self.crop_size}"
            )
        if self.do_center_crop and self.tile_size > self.size:
            raise ImageConfigError(
                f"crop_size {self.crop_size} is larger than the resized shortest edge {self.size}"
            )
        if self.resample not in {int(r) for r in Image.Resampling}:
            raise ImageConfigError(
                f"resample must be a PIL filter number (0-5), got {self.resample}"
            )

    @property
    def tile_size(self) -> int:
        """Side of the square crops the vision tower receives."""
        if self.do_center_crop:
            return self.crop_size or self.size
        return self.size

    @property
    def pad_color(self) -> tuple[int, int, int]:
        """LLaVA-1.5's fill for `pad`: the mean as 0..255 integers, truncated like the reference."""
        r, g, b = (int(m * 255) for m in self.image_mean)
        return (r, g, b)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> ImageProcessorConfig:
        """Read `preprocessor_config.json` from a Hugging Face CLIP/SigLIP (or llavakit) folder."""
        path = Path(folder) / PREPROCESSOR_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{folder} has no {PREPROCESSOR_FILE} (the vision tower's image processor config)"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ImageConfigError(f"{path} is not valid JSON: {error}") from error
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict, source: str = "image processor config") -> ImageProcessorConfig:
        """Parse the Hugging Face preprocessor-config dict; errors name `source` and the field."""

        def need(key: str) -> Any:
            if key not in data:
                raise ImageConfigError(f"{source}: missing field {key!r}")
            return data[key]

        if not data.get("do_resize", True):
            raise ImageConfigError(
                f"{source}: do_resize=false is not supported (the tower needs a fixed size)"
            )
        square, shortest = _parse_size(need("size"), source, "size")
        crop = _parse_crop(data.get("crop_size"), source)
        do_center_crop = bool(data.get("do_center_crop", True))  # CLIP processor default
        if square is not None:
            # Resizing straight to a square: a later crop to the same side changes nothing.
            if do_center_crop and crop not in (None, square):
                raise ImageConfigError(
                    f"{source}: size {square}x{square} then crop_size {crop} is not supported"
                )
            size, crop, do_center_crop = square, None, False
        else:
            if not do_center_crop:
                raise ImageConfigError(
                    f"{source}: size.shortest_edge without do_center_crop gives non-square images, "
                    "which the vision tower cannot take"
                )
            size = shortest
        mean, std = _three(need("image_mean")), _three(need("image_std"))
        if not data.get("do_normalize", True):
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        rescale = (
            float(data.get("rescale_factor", 1 / 255)) if data.get("do_rescale", True) else 1.0
        )
        try:
            return cls(
                image_mean=mean,
                image_std=std,
                size=int(size),
                crop_size=crop,
                resample=int(data.get("resample", Image.Resampling.BICUBIC)),
                rescale_factor=rescale,
                do_center_crop=do_center_crop,
            )
        except (ImageConfigError, TypeError) as error:
            raise ImageConfigError(f"{source}: {error}") from error

    def to_dict(self) -> dict[str, Any]:
        """The Hugging Face preprocessor-config dict (readable by `CLIPImageProcessor`)."""
        data: dict[str, Any] = {
            "image_processor_type": "CLIPImageProcessor",
            "do_convert_rgb": True,
            "do_resize": True,
            "resample": int(self.resample),
            "do_center_crop": self.do_center_crop,
            "do_rescale": True,
            "rescale_factor": self.rescale_factor,
            "do_normalize": True,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
        }
        if self.do_center_crop:
            crop = self.crop_size or self.size
            data["size"] = {"shortest_edge": self.size}
            data["crop_size"] = {"height": crop, "width": crop}
        else:
            data["size"] = {"height": self.size, "width": self.size}
        return data

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write `preprocessor_config.json` into `folder` (created if needed); returns its path."""
        path = Path(folder) / PREPROCESSOR_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path


def _three(value: Any) -> Any:
    """transformers allows one number for all three channels."""
    return (value,) * 3 if isinstance(value, (int, float)) else tuple(value)


def _parse_size(value: Any, source: str, field_name: str) -> tuple[int | None, int | None]:
    """(square side, None) or (None, shortest edge) from an HF size field (dict or legacy int)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return None, value  # legacy CLIP configs: "size": 224 means the shortest edge
    if isinstance(value, dict):
        if "shortest_edge" in value:
            return None, int(value["shortest_edge"])
        if "height" in value and "width" in value:
            if value["height"] != value["width"]:
                raise ImageConfigError(
                    f"{source}: {field_name} {value['height']}x{value['width']} is not square"
                )
            return int(value["height"]), None
    raise ImageConfigError(
        f"{source}: {field_name} must be {{'shortest_edge': N}} or {{'height': N, 'width': N}}, "
        f"got {value!r}"
    )


def _parse_crop(value: Any, source: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, dict) and "height" in value and "width" in value:
        if value["height"] != value["width"]:
            raise ImageConfigError(
                f"{source}: crop_size {value['height']}x{value['width']} is not square"
            )
        return int(value["height"])
    raise ImageConfigError(
        f"{source}: crop_size must be {{'height': N, 'width': N}}, got {value!r}"
    )


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


# ---- AnyRes (LLaVA-NeXT) geometry ----------------------------------------------------------------
def parse_grid_pinpoints(spec: Any, tile_size: int) -> list[tuple[int, int]]:
    """Candidate canvases as (height, width) pairs, each a multiple of `tile_size`.

    spec: a list of [height, width] pairs (transformers' convention), the same list written as a
    string, or a range string "(1x1),...,(3x3)" meaning every (i x j) tile grid in the range, in
    LLaVA-OneVision's order (i outer, j inner; i counts tile rows).
    """
    if isinstance(spec, str):
        text = spec.strip()
        grids = re.findall(r"\(\s*(\d+)\s*x\s*(\d+)\s*\)", text)
        if grids:
            (first_i, first_j), (last_i, last_j) = (
                tuple(map(int, g)) for g in (grids[0], grids[-1])
            )
            spec = [
                (i * tile_size, j * tile_size)
                for i in range(first_i, last_i + 1)
                for j in range(first_j, last_j + 1)
            ]
        else:
            try:
                spec = ast.literal_eval(text)
            except (ValueError, SyntaxError) as error:
                raise ValueError(
                    f"image_grid_pinpoints {spec!r}: expected [[h, w], ...] or '(1x1),...,(NxM)'"
                ) from error
    if not isinstance(spec, (list, tuple)) or not spec:
        raise ValueError(
            f"image_grid_pinpoints must be a non-empty list of [height, width], got {spec!r}"
        )
    pinpoints = []
    for pair in spec:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"image_grid_pinpoints entry {pair!r} is not a [height, width] pair")
        height, width = int(pair[0]), int(pair[1])
        if height <= 0 or width <= 0 or height % tile_size or width % tile_size:
            raise ValueError(
                f"image_grid_pinpoints entry {pair!r} must be positive multiples of the tile "
                f"size {tile_size}"
            )
        pinpoints.append((height, width))
    return pinpoints


def select_best_resolution(
    image_size_hw: tuple[int, int], candidates_hw: list[tuple[int, int]]
) -> tuple[int, int]:
    """The canvas that keeps the most of the image's pixels; ties go to the least wasted area.

    For each candidate the image is scaled to fit inside it; the effective resolution is the scaled
    pixel count capped at the original count (upscaling adds nothing). Exact ties: first wins.
    """
    height, width = int(image_size_hw[0]), int(image_size_hw[1])
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    best, best_effective, best_wasted = None, 0, math.inf
    for cand_h, cand_w in candidates_hw:
        scale = min(cand_w / width, cand_h / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        wasted = cand_w * cand_h - effective
        if effective > best_effective or (effective == best_effective and wasted < best_wasted):
            best, best_effective, best_wasted = (cand_h, cand_w), effective, wasted
    if best is None:
        raise ValueError("no candidate resolutions given")
    return best


def anyres_grid_shape(
    image_size_hw: tuple[int, int], pinpoints: list[tuple[int, int]], tile_size: int
) -> tuple[int, int]:
    """(rows, cols) of tiles the image is cut into."""
    height, width = select_best_resolution(image_size_hw, pinpoints)
    return height // tile_size, width // tile_size


def unpadded_grid_shape(
    image_size_hw: tuple[int, int], grid_hw: tuple[int, int]
) -> tuple[int, int]:
    """(h, w) of a feature grid of shape `grid_hw` after removing the rows/columns that only saw the
    padding added around an image of `image_size_hw` (LLaVA-NeXT's unpad, same rounding)."""
    orig_h, orig_w = image_size_hw
    grid_h, grid_w = grid_hw
    if orig_w / orig_h > grid_w / grid_h:
        new_h = int(round(orig_h * (grid_w / orig_w), 7))
        return grid_h - 2 * ((grid_h - new_h) // 2), grid_w
    new_w = int(round(orig_w * (grid_h / orig_h), 7))
    return grid_h, grid_w - 2 * ((grid_w - new_w) // 2)


def capped_grid_shape(
    grid_hw: tuple[int, int], patches_per_side: int, max_num_patches: int | None
) -> tuple[int, int]:
    """LLaVA-OneVision's `anyres_max_N` cap: a grid larger than N tiles' worth of patches (by more
    than 10% in side length) is shrunk, keeping its aspect, to about N tiles' worth."""
    height, width = grid_hw
    if max_num_patches is None:
        return height, width
    ratio = math.sqrt(height * width / (max_num_patches * patches_per_side**2))
    if ratio > 1.1:
        return int(height // ratio), int(width // ratio)
    return height, width


def anyres_feature_count(
    image_size_hw: tuple[int, int],
    pinpoints: list[tuple[int, int]],
    tile_size: int,
    patches_per_side: int,
    newline: bool = True,
    max_num_patches: int | None = None,
) -> int:
    """Feature vectors an AnyRes image becomes: base tile + unpadded grid (+ one newline per row).

    Known before the forward pass, so the processor can expand `<image>` into exactly this many
    placeholders. `max_num_patches` is the N of `anyres_max_N` (see `capped_grid_shape`).
    """
    rows, cols = anyres_grid_shape(image_size_hw, pinpoints, tile_size)
    grid = unpadded_grid_shape(image_size_hw, (rows * patches_per_side, cols * patches_per_side))
    height, width = capped_grid_shape(grid, patches_per_side, max_num_patches)
    return patches_per_side**2 + height * width + (height if newline else 0)


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
