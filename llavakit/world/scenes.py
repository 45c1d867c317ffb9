"""Scenes: one to five coloured shapes, never overlapping, over a light background.

Objects keep a clear gap between them so that every relation the teacher states is well
defined, and each box is measured from the drawn pixels rather than from the intended layout.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from llavakit.world.annotations import SCENE, WorldImage, WorldObject
from llavakit.world.backgrounds import paint_background
from llavakit.world.captions import scene_captions
from llavakit.world.relations import thing_from_object
from llavakit.world.shapes import draw_shape
from llavakit.world.vocabulary import CATEGORIES, OBJECT_COLOURS

_MAX_LAYOUT_TRIES = 100
_MAX_PLACEMENT_TRIES = 200


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are drawn."""

    size: int = 96
    """Width and height in pixels."""
    min_objects: int = 1
    max_objects: int = 5
    repeat_probability: float = 0.4
    """Chance that an object reuses a category already in the scene (so counts go above one)."""
    small_side: tuple[float, float] = (0.13, 0.19)
    """Side of a small object's box, as a fraction of the image side."""
    large_side: tuple[float, float] = (0.27, 0.35)
    """Side of a large object's box, as a fraction of the image side."""
    gap: float = 0.05
    """Least space between two objects' boxes, as a fraction of the image side."""
    color_jitter: int = 10
    """Each channel of an object's colour moves by up to this much from its named value."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}"
            )
        if self.size < 32:
            raise ValueError(f"scene size must be at least 32 pixels, got {self.size}")


def render_scene(
    rng: random.Random, image_id: int, file_name: str, config: SceneConfig = SceneConfig()
) -> tuple[Image.Image, WorldImage]:
    """Draw one random scene; returns the image and its annotation (with captions)."""
    image, background = paint_background(rng, config.size, config.size)
    layout = _layout(rng, config)
    objects = []
    for category, color, size, box in layout:
        mask = Image.new("L", image.size, 0)
        draw_shape(ImageDraw.Draw(mask), category, box)
        x0, y0, x1, y1 = mask.getbbox()
        base = OBJECT_COLOURS[color]
        jitter = config.color_jitter
        rgb = tuple(min(255, max(0, c + rng.randint(-jitter, jitter))) for c in base)
        image.paste(rgb, (0, 0, *image.size), mask)
        objects.append(WorldObject(category, color, size, (x0, y0, x1 - x0, y1 - y0)))
    annotation = WorldImage(
        image_id=image_id,
        file_name=file_name,
        width=config.size,
        height=config.size,
        kind=SCENE,
        background=background,
        objects=objects,
    )
    things = [thing_from_object(obj, config.size, config.size) for obj in objects]
    annotation.captions = scene_captions(things, background, rng)
    return image, annotation


def _layout(
    rng: random.Random, config: SceneConfig
) -> list[tuple[str, str, str, tuple[float, float, float, float]]]:
    """(category, colour, size, box) for each object, boxes apart by at least `gap`."""
    side = config.size
    margin = 2
    gap = config.gap * side
    for _ in range(_MAX_LAYOUT_TRIES):
        n = rng.randint(config.min_objects, config.max_objects)
        placed: list[tuple[str, str, str, tuple[float, float, float, float]]] = []
        for _ in range(n):
            if placed and rng.random() < config.repeat_probability:
                category = rng.choice([p[0] for p in placed])
            else:
                category = rng.choice(CATEGORIES)
            color = rng.choice(sorted(OBJECT_COLOURS))
            size = rng.choice(("small", "large"))
            low, high = config.small_side if size == "small" else config.large_side
            extent = rng.uniform(low, high) * side
            box = _place(rng, extent, side, margin, gap, [p[3] for p in placed])
            if box is None:
                break
            placed.append((category, color, size, box))
        if len(placed) == n:
            return placed
    raise RuntimeError(f"could not lay out a scene in {_MAX_LAYOUT_TRIES} tries: {config}")


def _place(
    rng: random.Random,
    extent: float,
    side: int,
    margin: int,
    gap: float,
    taken: list[tuple[float, float, float, float]],
) -> tuple[float, float, float, float] | None:
    for _ in range(_MAX_PLACEMENT_TRIES):
        x = rng.uniform(margin, side - margin - extent - 1)
        y = rng.uniform(margin, side - margin - extent - 1)
        box = (x, y, x + extent, y + extent)
        if all(_apart(box, other, gap) for other in taken):
            return box
    return None


def _apart(a: tuple[float, ...], b: tuple[float, ...], gap: float) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]
