"""Backgrounds shared by scenes and text-rich images: plain, gradient or lightly speckled.

Backgrounds vary so that a model cannot tell objects from background by one fixed colour, but
stay light and muted so that every object colour keeps its contrast and its name.
"""

from __future__ import annotations

import random

import numpy as np
from PIL import Image

from llavakit.world.vocabulary import BACKGROUND_COLOURS

STYLES = ("plain", "gradient", "speckled")


def paint_background(rng: random.Random, width: int, height: int) -> tuple[Image.Image, str]:
    """A new RGB image with a random background, and words for it ("beige to mint gradient")."""
    style = rng.choice(STYLES)
    first, second = rng.sample(sorted(BACKGROUND_COLOURS), 2)
    base = np.array(BACKGROUND_COLOURS[first], dtype=np.float32)
    if style == "plain":
        pixels = np.broadcast_to(base, (height, width, 3))
        description = first
    elif style == "gradient":
        end = np.array(BACKGROUND_COLOURS[second], dtype=np.float32)
        vertical = rng.random() < 0.5
        steps = height if vertical else width
        ramp = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]  # (steps, 1)
        line = base * (1 - ramp) + end * ramp  # (steps, 3)
        if vertical:
            pixels = np.broadcast_to(line[:, None, :], (height, width, 3))
        else:
            pixels = np.broadcast_to(line[None, :, :], (height, width, 3))
        description = f"{first} to {second} gradient"
    else:
        noise = np.random.default_rng(rng.getrandbits(64)).normal(0.0, 8.0, (height, width, 1))
        pixels = base + noise.astype(np.float32)  # (height, width, 3), grey noise
        description = f"speckled {first}"
    array = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(array), "RGB"), description
