"""Test images for the LLaVAR pipeline: text rendered with DejaVu fonts, and plain shapes."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansCondensed.ttf")


@dataclass
class RenderedText:
    """A rendered image and the words on it, line by line, with each line's ink box."""

    image: Image.Image
    lines: list[str]
    boxes: list[tuple[int, int, int, int]]

    @property
    def words(self) -> list[str]:
        return [word for line in self.lines for word in line.split()]


def font(name: str, px: int) -> ImageFont.FreeTypeFont:
    path = FONT_DIR / name
    if not path.is_file():
        pytest.skip(f"needs the DejaVu fonts ({path})")
    return ImageFont.truetype(str(path), px)


def render_lines(
    lines: list[str],
    size: tuple[int, int] = (360, 240),
    px: int = 24,
    origin: tuple[int, int] = (20, 20),
    leading: float = 1.35,
    font_name: str = "DejaVuSans.ttf",
    background: tuple[int, int, int] = (245, 240, 225),
    ink: tuple[int, int, int] = (20, 20, 30),
    image: Image.Image | None = None,
) -> RenderedText:
    """Draw `lines` top-down from `origin` (on `image` if given); records each line's ink box."""
    canvas = image if image is not None else Image.new("RGB", size, background)
    draw = ImageDraw.Draw(canvas)
    face = font(font_name, px)
    boxes = []
    x, y = origin
    for line in lines:
        draw.text((x, y), line, font=face, fill=ink)
        boxes.append(draw.textbbox((x, y), line, font=face))
        y += round(px * leading)
    return RenderedText(canvas, list(lines), boxes)


SIGNS = (
    ["GRAND OPENING", "fresh bread daily", "corner bakery"],
    ["City Library", "open until nine", "quiet reading room"],
    ["SUMMER MARKET", "local fruit stands", "every Saturday"],
    ["Platform four", "train to Harbour", "departs at noon"],
)


def text_image(index: int) -> RenderedText:
    """One of four text-rich test images (three lines, 22-28 px, varied fonts and colours)."""
    rng = random.Random(index)
    background = tuple(rng.randint(200, 255) for _ in range(3))
    ink = tuple(rng.randint(0, 70) for _ in range(3))
    return render_lines(
        SIGNS[index],
        px=22 + 2 * index,
        font_name=FONTS[index],
        background=background,  # type: ignore[arg-type]
        ink=ink,  # type: ignore[arg-type]
    )


def shapes_image(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """Plain coloured shapes on a flat background: nothing to read."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, tuple(rng.randint(0, 255) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(5):
        x, y = rng.randint(0, size[0] - 60), rng.randint(0, size[1] - 60)
        w, h = rng.randint(20, 60), rng.randint(20, 60)
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        if rng.random() < 0.5:
            draw.ellipse((x, y, x + w, y + h), fill=colour)
        else:
            draw.rectangle((x, y, x + w, y + h), fill=colour)
    return image
