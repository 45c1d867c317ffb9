"""Text-rich images: signs, posters, labels and book covers with rendered words.

Each image holds one board (annotated as an object of its kind) with one to three lines of one
or two words from the world's word list. Every word is drawn on its own mask, so the word and
line boxes in the annotation are the tight boxes of the inked pixels. Normal text is rendered
at 32 px or more on a 192 px image (scaled with the size), so that after shrinking to the demo
tower's 96 px input its letters are still about two 12 px patches tall (legible to a base
LLaVA); `small_text` renders at about 10 px, legible at full resolution but not after shrinking
to a small encoder's input (what LLaVAR's high-resolution branch is for).
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from llavakit.world.annotations import WorldImage, WorldObject, WorldText
from llavakit.world.backgrounds import paint_background
from llavakit.world.captions import text_image_captions
from llavakit.world.vocabulary import TEXT_COLOURS, TEXT_KINDS, WORDS

PREFERRED_FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSansCondensed.ttf",
    "DejaVuSansCondensed-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
)
"""Font files looked for (in this order); regular weights only, so every word stays legible."""

DEFAULT_FONT_DIRS = (
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    "~/.local/share/fonts",
    "~/.fonts",
    "/Library/Fonts",
    "C:/Windows/Fonts",
)

BUILTIN_FONT = "pillow-default"
"""Name used for Pillow's own font when no DejaVu font is installed."""

_REFERENCE_SIZE = 192
"""Font sizes below are for a 192 px image and scale with the image size."""
_TITLE_PX = (40, 52)
_BODY_PX = (32, 40)
_LEGIBLE_PX = 30
"""Smallest size a line of normal text may shrink to when fitting its words (at 192 px)."""
_SMALL_PX = (9, 12)
_WORD_GAP = 1.8
"""Gap between words on a line, in widths of the font's space."""
_MIN_CONTRAST = 100.0
"""Least difference in luma (0-255) between lettering and board."""


class FontBook:
    """The fonts available to one generation run, loaded once per (font, size)."""

    def __init__(self, font_dirs: Sequence[str | Path] = DEFAULT_FONT_DIRS):
        found: dict[str, Path] = {}
        for folder in font_dirs:
            folder = Path(folder).expanduser()
            if not folder.is_dir():
                continue
            for path in sorted(folder.rglob("*.ttf")):
                if path.name in PREFERRED_FONTS and path.name not in found:
                    found[path.name] = path
        self.paths = {name: found[name] for name in PREFERRED_FONTS if name in found}
        if not self.paths:
            warnings.warn(
                f"no DejaVu fonts found under {', '.join(map(str, font_dirs))}; text-rich "
                "images use Pillow's built-in font (install fonts-dejavu for variety)",
                stacklevel=2,
            )
        self._loaded: dict[tuple[str, int], ImageFont.FreeTypeFont | ImageFont.ImageFont] = {}

    @property
    def names(self) -> list[str]:
        return list(self.paths) or [BUILTIN_FONT]

    def font(self, name: str, px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
        key = (name, px)
        if key not in self._loaded:
            if name == BUILTIN_FONT:
                self._loaded[key] = ImageFont.load_default(size=px)
            else:
                self._loaded[key] = ImageFont.truetype(str(self.paths[name]), px)
        return self._loaded[key]


@dataclass(frozen=True)
class TextImageConfig:
    """How text-rich images are drawn."""

    size: int = 192
    """Width and height in pixels."""
    small_text: bool = False
    """Render deliberately small text (hard to read once the image is shrunk)."""
    single_word_probability: float = 0.4
    """Chance that an image carries exactly one word."""
    words: tuple[str, ...] = WORDS
    """Vocabulary to draw from."""

    def __post_init__(self) -> None:
        if self.size < 64:
            raise ValueError(f"text image size must be at least 64 pixels, got {self.size}")
        if not self.words:
            raise ValueError("text images need a non-empty word list")


@dataclass(frozen=True)
class _Line:
    words: tuple[str, ...]
    px: int
    color: str

    @property
    def text(self) -> str:
        return " ".join(self.words)


def render_text_image(
    rng: random.Random,
    image_id: int,
    file_name: str,
    fonts: FontBook,
    config: TextImageConfig = TextImageConfig(),
) -> tuple[Image.Image, WorldImage]:
    """Draw one random text-rich image; returns the image and its annotation."""
    side = config.size
    scale = side / _REFERENCE_SIZE
    kind = rng.choice(TEXT_KINDS)
    image, background = paint_background(rng, side, side)
    board_color, ink, accent = _colours(rng)
    font_name = rng.choice(fonts.names)
    case = rng.choice((str.lower, str.upper, str.title))

    board, area, align_top = _board_geometry(rng, kind, side)
    lines = _plan_lines(rng, kind, fonts, font_name, case, area, scale, config, ink, accent)
    if kind == "sign":
        board = _fit_sign(board, lines, side)
        area = _inset(board, round(0.06 * side))
    if kind == "poster":
        background = ""  # the poster covers the whole image
    _draw_board(image, kind, board, board_color, side, rng)
    board_mask = Image.new("L", image.size, 0)
    ImageDraw.Draw(board_mask).rectangle(board, fill=255)
    x0, y0, x1, y1 = board_mask.getbbox()
    board_object = WorldObject(kind, board_color, "large", (x0, y0, x1 - x0, y1 - y0))

    texts = _draw_lines(image, lines, fonts, font_name, area, align_top, rng)
    annotation = WorldImage(
        image_id=image_id,
        file_name=file_name,
        width=side,
        height=side,
        kind=kind,
        background=background,
        objects=[board_object],
        texts=texts,
        small_text=config.small_text,
    )
    annotation.captions = text_image_captions(
        kind,
        board_color,
        [line.color for line in lines],
        annotation.lines(),
        background,
        rng,
    )
    return image, annotation


def _luma(rgb: tuple[int, int, int]) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _colours(rng: random.Random) -> tuple[str, str, str]:
    """Board colour, main ink and accent ink; both inks contrast with the board."""
    names = sorted(TEXT_COLOURS)
    while True:
        board = rng.choice(names)
        inks = [
            name
            for name in names
            if abs(_luma(TEXT_COLOURS[name]) - _luma(TEXT_COLOURS[board])) >= _MIN_CONTRAST
        ]
        if inks:
            ink = rng.choice(inks)
            others = [name for name in inks if name != ink]
            accent = rng.choice(others) if others and rng.random() < 0.4 else ink
            return board, ink, accent


Rect = tuple[int, int, int, int]


def _board_geometry(rng: random.Random, kind: str, side: int) -> tuple[Rect, Rect, bool]:
    """(board box, text area, text aligned to the top) before the text is known."""
    if kind == "poster":
        board = (0, 0, side - 1, side - 1)
        return board, _inset(board, round(0.08 * side)), False
    if kind == "book cover":
        width = round(rng.uniform(0.7, 0.85) * side)
        height = round(rng.uniform(0.82, 0.94) * side)
        x = rng.randint(2, side - width - 3)
        y = rng.randint(2, side - height - 3)
        board = (x, y, x + width, y + height)
        spine = round(0.1 * width)
        area = (x + spine + round(0.05 * side), y + round(0.08 * side), x + width - round(0.05 * side), y + height - round(0.08 * side))  # fmt: skip
        return board, area, True
    if kind == "label":
        width = round(rng.uniform(0.7, 0.9) * side)
        height = round(rng.uniform(0.45, 0.65) * side)
    else:  # sign: the height is fitted to the text later
        width = round(rng.uniform(0.8, 0.95) * side)
        height = round(0.6 * side)
    x = rng.randint(2, side - width - 3)
    y = rng.randint(2, max(2, side - height - 3))
    board = (x, y, x + width, y + height)
    return board, _inset(board, round(0.06 * side)), False


def _inset(rect: Rect, by: int) -> Rect:
    return (rect[0] + by, rect[1] + by, rect[2] - by, rect[3] - by)


def _plan_lines(
    rng: random.Random,
    kind: str,
    fonts: FontBook,
    font_name: str,
    case: Callable[[str], str],
    area: Rect,
    scale: float,
    config: TextImageConfig,
    ink: str,
    accent: str,
) -> list[_Line]:
    """Choose words and sizes that fit the text area; the first line is the largest."""
    width = area[2] - area[0]
    height = area[3] - area[1]
    if rng.random() < config.single_word_probability:
        n_lines, max_words = 1, 1
    else:
        n_lines = rng.randint(1, 2 if kind in ("sign", "label") else 3)
        max_words = 2
    pool = list(config.words)
    rng.shuffle(pool)
    lines: list[_Line] = []
    used_height = 0.0
    for index in range(n_lines):
        if config.small_text:
            low, high = _SMALL_PX
        else:
            low, high = _TITLE_PX if index == 0 else _BODY_PX
        min_px = max(6, round((low if config.small_text else _LEGIBLE_PX) * scale))
        # No taller than the room left, but never below the legible size.
        room = int((height - used_height) / 1.3)
        px = max(min_px, min(round(rng.randint(low, high) * scale), room))
        words: list[str] = []
        while pool and len(words) < max_words:
            candidate = case(pool.pop())
            trial = words + [candidate]
            fitted = _fit_px(fonts, font_name, trial, px, width)
            if fitted < min_px:
                if words:
                    break  # the line is full
                continue  # too long even alone: try another word
            words, px = trial, fitted
            if len(words) == 1 and n_lines > 1 and rng.random() < 0.5:
                break
        if not words or used_height + 1.3 * px > height:
            break
        used_height += 1.3 * px
        lines.append(_Line(tuple(words), px, ink if index == 0 else accent))
    if not lines:
        raise RuntimeError(f"no word of the list fits a {width}px wide {kind}")
    return lines


def _fit_px(fonts: FontBook, font_name: str, words: list[str], px: int, width: int) -> int:
    """The largest size not above `px` at which the words fit on one line of `width` pixels."""
    length = _line_length(fonts.font(font_name, px), words)
    while length > width and px > 1:
        px = min(px - 1, int(px * width / length))
        length = _line_length(fonts.font(font_name, px), words)
    return px


def _word_gap(font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> float:
    """Space between words: wider than the font's own, so OCR never runs two words together."""
    return _WORD_GAP * font.getlength(" ")


def _line_length(font: ImageFont.FreeTypeFont | ImageFont.ImageFont, words: Sequence[str]) -> float:
    return sum(font.getlength(word) for word in words) + _word_gap(font) * (len(words) - 1)


def _fit_sign(board: Rect, lines: list[_Line], side: int) -> Rect:
    """Shrink a sign's board to its text, leaving room for the post below."""
    x0, y0, x1, _ = board
    pad = round(0.06 * side)
    height = round(sum(1.3 * line.px for line in lines)) + 2 * pad
    y0 = min(y0, side - height - round(0.15 * side))
    return (x0, max(2, y0), x1, max(2, y0) + height)


def _draw_board(
    image: Image.Image, kind: str, board: Rect, color: str, side: int, rng: random.Random
) -> None:
    draw = ImageDraw.Draw(image)
    fill = TEXT_COLOURS[color]
    edge = tuple(int(c * 0.6) for c in fill)
    line_width = max(1, round(side / 96))
    if kind == "sign":
        post_width = max(3, round(0.06 * side))
        middle = (board[0] + board[2]) // 2
        post = (110, 100, 90) if rng.random() < 0.5 else (120, 80, 45)
        draw.rectangle((middle - post_width // 2, board[3], middle + post_width // 2, side), post)
        draw.rectangle(board, fill=fill, outline=edge, width=line_width)
    elif kind == "label":
        draw.rounded_rectangle(
            board, radius=round(0.06 * side), fill=fill, outline=edge, width=line_width
        )
    elif kind == "book cover":
        draw.rectangle(board, fill=fill, outline=edge, width=line_width)
        spine = round(0.1 * (board[2] - board[0]))
        draw.rectangle((board[0], board[1], board[0] + spine, board[3]), fill=edge)
    else:
        draw.rectangle(board, fill=fill)


def _draw_lines(
    image: Image.Image,
    lines: list[_Line],
    fonts: FontBook,
    font_name: str,
    area: Rect,
    align_top: bool,
    rng: random.Random,
) -> list[WorldText]:
    """Draw every word on its own mask; returns line and word annotations."""
    total = sum(1.3 * line.px for line in lines)
    area_height = area[3] - area[1]
    top = area[1] if align_top else area[1] + (area_height - total) / 2
    texts: list[WorldText] = []
    y = top
    for index, line in enumerate(lines):
        font = fonts.font(font_name, line.px)
        width = _line_length(font, line.words)
        slack = (area[2] - area[0]) - width
        x = area[0] + slack / 2 + rng.uniform(-0.25, 0.25) * slack
        rgb = TEXT_COLOURS[line.color]
        word_boxes = []
        for word in line.words:
            mask = Image.new("L", image.size, 0)
            ImageDraw.Draw(mask).text((x, y), word, font=font, fill=255)
            image.paste(rgb, (0, 0, *image.size), mask)
            x0, y0, x1, y1 = mask.getbbox()
            word_boxes.append((x0, y0, x1, y1))
            texts.append(WorldText(word, (x0, y0, x1 - x0, y1 - y0), "word", index, line.color, line.px))  # fmt: skip
            x += font.getlength(word) + _word_gap(font)
        x0 = min(b[0] for b in word_boxes)
        y0 = min(b[1] for b in word_boxes)
        x1 = max(b[2] for b in word_boxes)
        y1 = max(b[3] for b in word_boxes)
        texts.append(WorldText(line.text, (x0, y0, x1 - x0, y1 - y0), "line", index, line.color, line.px))  # fmt: skip
        y += 1.3 * line.px
    return texts
