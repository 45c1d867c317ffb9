"""OCR lines into paragraphs: LLaVAR's geometric merge, then reading order.

Lines whose boxes are close and of similar height belong to one paragraph (a sign, a title, a
block of body text); paragraphs and the lines in them are read top to bottom, left to right.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llavakit.datagen.ocr.engines import OcrLine, confident


@dataclass(frozen=True)
class Paragraph:
    """Lines that belong together (a sign, a title, a block of body text), in reading order."""

    lines: tuple[OcrLine, ...]

    @property
    def text(self) -> str:
        return " ".join(line.text for line in self.lines)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        boxes = [line.bounds for line in self.lines]
        return (
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        )


def reading_order(boxes: Sequence[tuple[float, float, float, float]]) -> list[int]:
    """Indices of (x1, y1, x2, y2) boxes top-to-bottom, left-to-right within a row.

    Boxes whose vertical extent overlaps the first box of a row by half the smaller height join
    that row, so slightly uneven baselines do not reorder a line's pieces.
    """
    order = sorted(range(len(boxes)), key=lambda i: (boxes[i][1], boxes[i][0]))
    rows: list[list[int]] = []
    for index in order:
        x1, y1, x2, y2 = boxes[index]
        if rows:
            head = boxes[rows[-1][0]]
            overlap = min(y2, head[3]) - max(y1, head[1])
            if overlap >= 0.5 * min(y2 - y1, head[3] - head[1]):
                rows[-1].append(index)
                continue
        rows.append([index])
    return [i for row in rows for i in sorted(row, key=lambda j: boxes[j][0])]


def merge_paragraphs(
    lines: Sequence[OcrLine],
    max_line_gap: float = 0.6,
    min_height_ratio: float = 0.7,
    max_word_gap: float = 1.2,
) -> list[Paragraph]:
    """Group lines into paragraphs by geometry; paragraphs and their lines in reading order.

    Two lines belong together when their heights are similar (smaller / larger >=
    `min_height_ratio`) and either one sits under the other with overlapping horizontal extent
    and a vertical gap of at most `max_line_gap` x their mean height, or both sit on one row
    with a horizontal gap of at most `max_word_gap` x their mean height (one line the detector
    cut in two). Groups are the connected components of that relation.
    """
    bounds = [line.bounds for line in lines]
    parent = list(range(len(lines)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(lines)):
        for j in range(i + 1, len(lines)):
            if _belong_together(bounds[i], bounds[j], max_line_gap, min_height_ratio, max_word_gap):
                parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(lines)):
        groups.setdefault(root(i), []).append(i)
    paragraphs = []
    for members in groups.values():
        order = reading_order([bounds[i] for i in members])
        paragraphs.append(Paragraph(tuple(lines[members[k]] for k in order)))
    order = reading_order([p.bounds for p in paragraphs])
    return [paragraphs[k] for k in order]


def _belong_together(
    a: tuple[float, float, float, float],
    b: tuple[float, float, float, float],
    max_line_gap: float,
    min_height_ratio: float,
    max_word_gap: float,
) -> bool:
    height_a, height_b = a[3] - a[1], b[3] - b[1]
    if min(height_a, height_b) <= 0:
        return False
    if min(height_a, height_b) / max(height_a, height_b) < min_height_ratio:
        return False
    mean_height = (height_a + height_b) / 2
    vertical_overlap = min(a[3], b[3]) - max(a[1], b[1])
    horizontal_overlap = min(a[2], b[2]) - max(a[0], b[0])
    if vertical_overlap >= 0.5 * min(height_a, height_b):  # same row
        return -horizontal_overlap <= max_word_gap * mean_height
    upper, lower = (a, b) if a[1] <= b[1] else (b, a)
    gap = lower[1] - upper[3]
    return horizontal_overlap > 0 and gap <= max_line_gap * mean_height


def paragraph_texts(lines: Sequence[OcrLine], min_confidence: float) -> list[str]:
    """Text of each paragraph formed by the confident lines, in reading order."""
    return [p.text for p in merge_paragraphs(confident(lines, min_confidence))]
