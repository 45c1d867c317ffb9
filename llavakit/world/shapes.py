"""Outlines of the world's shape categories, drawn into a square box.

Every outline covers the centre of its box, so "the pixel at the box centre has the object's
colour" holds for every category (tests rely on it).
"""

from __future__ import annotations

import math
from types import MappingProxyType

from PIL import ImageDraw

Point = tuple[float, float]


def draw_shape(draw: ImageDraw.ImageDraw, category: str, box: tuple[float, float, float, float]):
    """Fill the outline of `category` inside `box` = (x0, y0, x1, y1) with colour 255."""
    x0, y0, x1, y1 = box
    if category == "circle":
        draw.ellipse(box, fill=255)
    elif category == "square":
        draw.rectangle(box, fill=255)
    else:
        draw.polygon(_outline(category, x0, y0, x1 - x0, y1 - y0), fill=255)


def _outline(category: str, x: float, y: float, w: float, h: float) -> list[Point]:
    """Polygon points of a category in the unit square, scaled to the box."""
    if category not in _UNIT_OUTLINES:
        raise ValueError(f"unknown shape category {category!r}")
    return [(x + u * w, y + v * h) for u, v in _UNIT_OUTLINES[category]()]


def _triangle() -> list[Point]:
    return [(0.5, 0.0), (1.0, 1.0), (0.0, 1.0)]


def _diamond() -> list[Point]:
    return [(0.5, 0.0), (0.9, 0.5), (0.5, 1.0), (0.1, 0.5)]


def _cross() -> list[Point]:
    a, b = 1 / 3, 2 / 3
    return [(a, 0), (b, 0), (b, a), (1, a), (1, b), (b, b), (b, 1), (a, 1), (a, b), (0, b), (0, a), (a, a)]  # fmt: skip


def _arrow() -> list[Point]:
    """Pointing right: a shaft through the middle and a triangular head."""
    return [(0, 0.35), (0.55, 0.35), (0.55, 0.05), (1, 0.5), (0.55, 0.95), (0.55, 0.65), (0, 0.65)]


def _star() -> list[Point]:
    points = []
    for i in range(10):
        radius = 0.5 if i % 2 == 0 else 0.22
        angle = -math.pi / 2 + i * math.pi / 5
        points.append((0.5 + radius * math.cos(angle), 0.53 + radius * math.sin(angle)))
    return points


def _heart() -> list[Point]:
    """The classic parametric heart curve, normalised into the unit square."""
    raw = []
    for i in range(48):
        t = 2 * math.pi * i / 48
        u = 16 * math.sin(t) ** 3
        v = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
        raw.append((u, v))
    us, vs = [p[0] for p in raw], [p[1] for p in raw]
    return [
        ((u - min(us)) / (max(us) - min(us)), (v - min(vs)) / (max(vs) - min(vs))) for u, v in raw
    ]


_UNIT_OUTLINES = MappingProxyType(
    {
        "triangle": _triangle,
        "diamond": _diamond,
        "cross": _cross,
        "arrow": _arrow,
        "star": _star,
        "heart": _heart,
    }
)
