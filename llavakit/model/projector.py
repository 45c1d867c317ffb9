"""Projectors map vision features into the language model's embedding space.

Parameter names follow the original LLaVA layout (an nn.Sequential with Linear layers at indices
0, 2, ...), so `mm_projector.{0,2}.*` weights from original checkpoints load without renaming.
"""

from __future__ import annotations

import re

from torch import nn

_MLP = re.compile(r"^mlp(\d+)x_gelu$")
PROJECTOR_TYPES = ("linear", "mlp{N}x_gelu", "identity")


def build_projector(kind: str, vision_dim: int, text_dim: int) -> nn.Module:
    """`linear` (LLaVA), `mlp{N}x_gelu` (N Linear layers with GELU between; 1.5 uses N=2), `identity`."""
    if kind == "linear":
        return nn.Linear(vision_dim, text_dim)
    if kind == "identity":
        if vision_dim != text_dim:
            raise ValueError(
                f"identity projector needs equal widths, got vision {vision_dim} vs text {text_dim}"
            )
        return nn.Identity()
    match = _MLP.match(kind)
    if match and int(match.group(1)) >= 1:
        layers: list[nn.Module] = [nn.Linear(vision_dim, text_dim)]
        for _ in range(int(match.group(1)) - 1):
            layers += [nn.GELU(), nn.Linear(text_dim, text_dim)]
        return nn.Sequential(*layers)
    raise ValueError(f"unknown projector type {kind!r}; known: {', '.join(PROJECTOR_TYPES)}")


def projected_token_count(kind: str, n_features: int) -> int:
    """Tokens a projector of this kind makes from `n_features` vision features of one crop.

    Every projector here maps each feature to one token; one that pools or merges features
    (a 2x2 pixel shuffle, a resampler) answers with its own count here, and the processor's
    placeholders and the model's checks follow (`llavakit.image_tokens.ImageTokens`).
    """
    return n_features
