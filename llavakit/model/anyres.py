"""AnyRes feature packing (LLaVA-NeXT "spatial_unpad"): per-tile features to one image's sequence.

The vision tower sees the base crop and the grid tiles as a batch of independent squares. Here the
tiles' patch features are put back on one spatial grid, the rows/columns that only saw padding are
removed, an optional LLaVA-OneVision cap shrinks very large grids, and a learned `image_newline`
vector closes each row so the language model can tell where rows end. The geometry (and therefore
the output length) comes from `llavakit.image_tokens`, the same functions the processor uses to count
placeholders, and follows transformers' `LlavaNextModel.pack_image_features` exactly.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from llavakit.image_tokens import anyres_grid_shape, capped_grid_shape, unpadded_grid_shape


def unpad_features(features: torch.Tensor, image_size_hw: tuple[int, int]) -> torch.Tensor:
    """Drop the padding rows or columns of a feature grid.

    features: [D, H, W] covering the padded canvas; image_size_hw: original (height, width).
    returns: [D, h, w], the centred part that saw the image.
    """
    _, grid_h, grid_w = features.shape
    height, width = unpadded_grid_shape(tuple(int(v) for v in image_size_hw), (grid_h, grid_w))
    top, left = (grid_h - height) // 2, (grid_w - width) // 2
    return features[:, top : top + height, left : left + width]


def pack_anyres_features(
    tile_features: torch.Tensor,
    image_size_hw: tuple[int, int],
    pinpoints: list[tuple[int, int]],
    tile_size: int,
    image_newline: torch.Tensor | None,
    max_num_patches: int | None = None,
) -> torch.Tensor:
    """One image's AnyRes features in the order the language model reads them.

    tile_features: [1 + rows*cols, N, D], base crop first then tiles row-major, N = patches per
    tile (a square number: CLS already dropped). image_newline: [D] or None.
    max_num_patches: N of LLaVA-OneVision's `anyres_max_N`, or None for no cap.
    returns: [M, D] with M = `llavakit.image_tokens.anyres_feature_count(...)`.
    """
    image_size_hw = (int(image_size_hw[0]), int(image_size_hw[1]))
    n_crops, n_patches, dim = tile_features.shape
    side = math.isqrt(n_patches)
    if side * side != n_patches:
        raise ValueError(
            f"AnyRes needs a square grid of patch features per tile, got {n_patches} "
            "(is the CLS token still included? use vision_select_feature='patch')"
        )
    rows, cols = anyres_grid_shape(image_size_hw, pinpoints, tile_size)
    if n_crops != 1 + rows * cols:
        raise ValueError(
            f"image of size {image_size_hw[0]}x{image_size_hw[1]} needs 1 + {rows}x{cols} crops, "
            f"got {n_crops}"
        )
    base = tile_features[0]  # [N, D]
    grid = tile_features[1:].view(rows, cols, side, side, dim)
    grid = grid.permute(4, 0, 2, 1, 3).reshape(dim, rows * side, cols * side)  # [D, H, W]
    grid = unpad_features(grid, image_size_hw)  # [D, h, w]
    capped = capped_grid_shape(tuple(grid.shape[1:]), side, max_num_patches)
    if capped != tuple(grid.shape[1:]):
        grid = F.interpolate(grid[None], list(capped), mode="bilinear")[0]
    if image_newline is not None:
        newline = image_newline.to(grid.device, grid.dtype)[:, None, None]
        grid = torch.cat((grid, newline.expand(dim, grid.shape[1], 1)), dim=2)  # [D, h, w + 1]
    return torch.cat((base, grid.flatten(1, 2).transpose(0, 1)), dim=0)  # [N + h*(w+1), D]
