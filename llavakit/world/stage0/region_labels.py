"""Patch-level labels for the world's CLIP: what each patch of an image shows.

Web-scale CLIP ends up with patch features that say what object (and which word) lies where,
and LLaVA relies on that when it hands the patches to the LLM; a tiny CLIP trained for a minute
on a few thousand captions does not get there by contrast alone. A region-level objective beside
the contrastive one (in the spirit of RegionCLIP/GLIP's grounding losses) gives the world's
tower that knowledge: a linear probe on every patch feature of the layer LLaVA reads must name
the shape, colour and size of the object under the patch centre, or the word and letter of the
text under it, and the patch's own row and column (so the features keep where they are, as real
CLIP's do). The labels come from the world's boxes; the probes are dropped after stage 0.
"""

from __future__ import annotations

import string

import torch

from llavakit.world.annotations import WorldImage
from llavakit.world.vocabulary import CATEGORIES, OBJECT_COLOURS, SIZES, WORDS

IGNORE = -100
LETTERS = string.ascii_lowercase
SHAPE, COLOUR, SIZE, WORD, LETTER, ROW, COLUMN = range(7)


def label_classes(grid: int) -> dict[str, int]:
    """Classes of each probe of a `grid` x `grid` tower, in column order; rows and columns count
    from 1. Class 0 of the others is never a target (a patch that shows no object or no text is
    IGNORE for them, see `patch_labels`); it keeps the class ids of the vocabulary's order."""
    return {
        "shape": 1 + len(CATEGORIES),
        "colour": 1 + len(OBJECT_COLOURS),
        "size": 1 + len(SIZES),
        "word": 1 + len(WORDS),
        "letter": 1 + len(LETTERS),
        "row": 1 + grid,
        "column": 1 + grid,
    }


_SHAPES = {name: i for i, name in enumerate(CATEGORIES, start=1)}
_COLOURS = {name: i for i, name in enumerate(OBJECT_COLOURS, start=1)}
_SIZES = {name: i for i, name in enumerate(SIZES, start=1)}
_WORDS = {word.lower(): i for i, word in enumerate(WORDS, start=1)}


def patch_labels(image: WorldImage, grid: int) -> torch.Tensor:
    """[grid * grid, 7] class ids of the patches of a `grid` x `grid` tower, row-major.

    A scene labels shape, colour and size under each patch (later objects are drawn on top); a
    text image labels the word and letter (letters spread evenly over a word's box). Every other
    entry is IGNORE, the background included: with "nothing here" as a class, the three quarters
    of patches that show background drowned the object patches, and in 100 s the shape probe
    stayed at chance (0.14 on object patches; without background targets 0.29, colour 0.75 ->
    0.97, size 0.56 -> 0.89, README). Row and column are labelled on every patch."""
    labels = torch.full((grid * grid, len(label_classes(grid))), IGNORE, dtype=torch.long)
    for row in range(grid):
        for col in range(grid):
            x = (col + 0.5) * image.width / grid
            y = (row + 0.5) * image.height / grid
            patch = labels[row * grid + col]
            patch[ROW], patch[COLUMN] = row + 1, col + 1
            for obj in image.objects if image.is_scene else ():
                if _inside(obj.bbox, x, y):
                    patch[SHAPE] = _SHAPES[obj.category]
                    patch[COLOUR] = _COLOURS.get(obj.color, 0)
                    patch[SIZE] = _SIZES.get(obj.size, 0)
            for text in image.texts:
                if text.level == "word" and _inside(text.bbox, x, y):
                    patch[WORD] = _WORDS.get(text.text.lower(), 0)
                    left, _, width, _ = text.bbox
                    index = min(
                        len(text.text) - 1, int((x - left) / max(width, 1) * len(text.text))
                    )
                    character = text.text[index].lower()
                    patch[LETTER] = LETTERS.index(character) + 1 if character in LETTERS else 0
    return labels


def _inside(box: tuple[int, int, int, int], x: float, y: float) -> bool:
    left, top, width, height = box
    return left <= x <= left + width and top <= y <= top + height
