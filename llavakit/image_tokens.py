"""How many tokens an image becomes: the one count, and the AnyRes grid geometry behind it.

The processor expands each `<image>` into this many placeholders, the model checks (and, for
AnyRes, lays out) that many feature vectors, and the data code sizes samples with it; all three ask
`ImageTokens`, built from the model config and the tower's geometry. The count is the tower's
features per crop (CLS kept or not: `model/towers.py`) after the projector (`model/projector.py`
says whether it changes the count); for AnyRes (LLaVA-NeXT) it is the base crop plus the unpadded
tile grid, optionally capped (LLaVA-OneVision's `anyres_max_N`), plus one newline per grid row.

Conventions: sizes are (height, width). Plain Python: no torch, no Pillow.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llavakit.config import ModelConfig


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


def has_image_newline(config: ModelConfig) -> bool:
    """Whether the model learns an `image_newline` closing each row of AnyRes tile features.

    `model/io.assemble` creates the vector exactly when this says so, and the count follows it.
    """
    return config.image_aspect_ratio == "anyres"


@dataclass(frozen=True)
class ImageTokens:
    """Everything that decides how many tokens an image becomes; `count` is the one answer."""

    per_crop: int
    """Tokens one square crop becomes: the tower's selected features, after the projector."""
    tile_size: int
    """Side of the square crops the tower sees (its image size)."""
    patches_per_side: int
    """Patches along one side of a crop."""
    pinpoints: tuple[tuple[int, int], ...] | None = None
    """AnyRes candidate canvases (height, width); None for one crop per image."""
    newline: bool = False
    """AnyRes: one learned newline token after each row of the tile grid."""
    max_num_patches: int | None = None
    """AnyRes: the N of LLaVA-OneVision's `anyres_max_N` cap, or None."""

    @classmethod
    def for_model(
        cls,
        config: ModelConfig,
        tile_size: int,
        patch_size: int,
        tower_features: int,
        newline: bool | None = None,
    ) -> ImageTokens:
        """The count for a model config and its tower's geometry.

        tower_features: feature vectors the tower gives per crop (CLS included or not).
        newline: whether the model has an AnyRes newline; by default what `has_image_newline` says.
        """
        from llavakit.model.projector import projected_token_count

        per_crop = projected_token_count(config.projector_type, tower_features)
        anyres = config.image_aspect_ratio == "anyres"
        if anyres and per_crop != tower_features:
            raise ValueError(
                f"projector {config.projector_type!r} changes the token count, which AnyRes "
                "(one spatial grid of patch features) does not support"
            )
        pinpoints = parse_grid_pinpoints(config.image_grid_pinpoints, tile_size) if anyres else None
        return cls(
            per_crop=per_crop,
            tile_size=tile_size,
            patches_per_side=tile_size // patch_size,
            pinpoints=tuple(pinpoints) if pinpoints is not None else None,
            newline=has_image_newline(config) if newline is None else newline,
            max_num_patches=config.anyres_max_patches if anyres else None,
        )

    @property
    def fewest(self) -> int:
        """The fewest tokens any image becomes (one crop's; AnyRes adds tiles to it)."""
        return self.per_crop

    def count(self, image_size_hw: tuple[int, int] | None = None) -> int:
        """Tokens (= placeholders = feature vectors) an image of (height, width) becomes.

        Without AnyRes every image becomes `per_crop` tokens and the size may be omitted.
        """
        if self.pinpoints is None:
            return self.per_crop
        if image_size_hw is None:
            raise ValueError("AnyRes token counts depend on the image size: pass (height, width)")
        return anyres_feature_count(
            (int(image_size_hw[0]), int(image_size_hw[1])),
            list(self.pinpoints),
            self.tile_size,
            self.patches_per_side,
            newline=self.newline,
            max_num_patches=self.max_num_patches,
        )
