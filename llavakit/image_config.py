"""The vision tower's image processor config: what a CLIP/SigLIP `preprocessor_config.json` says.

Read from and written as the Hugging Face dict, so a folder llavakit writes is read back by
`CLIPImageProcessor.from_pretrained` and the other way round. Pillow only, no torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

PREPROCESSOR_FILE = "preprocessor_config.json"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


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
