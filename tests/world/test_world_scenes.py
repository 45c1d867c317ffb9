"""Scenes: deterministic, boxes tight around the drawn pixels, captions true to the objects."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from llavakit.world.scenes import SceneConfig, render_scene
from llavakit.world.vocabulary import CATEGORIES, OBJECT_COLOURS, plural


def _scene(seed: int, size: int = 96):
    image, annotation = render_scene(
        random.Random(seed), seed, f"{seed}.png", SceneConfig(size=size)
    )
    return np.asarray(image).astype(int), annotation


def test_same_seed_same_scene_other_seed_other_scene():
    first, annotation = _scene(11)
    again, annotation_again = _scene(11)
    other, _ = _scene(12)
    assert np.array_equal(first, again)
    assert annotation == annotation_again
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("size", [64, 96, 160])
def test_boxes_are_tight_around_pixels_of_the_objects_colour(size):
    for seed in range(25):
        pixels, annotation = _scene(seed, size)
        assert pixels.shape == (size, size, 3)
        assert 1 <= len(annotation.objects) <= 5
        for obj in annotation.objects:
            x, y, w, h = obj.bbox
            assert 0 <= x and 0 <= y and x + w <= size and y + h <= size and w > 0 and h > 0
            target = np.array(OBJECT_COLOURS[obj.color])
            centre = pixels[y + h // 2, x + w // 2]
            assert np.abs(centre - target).max() <= 12, (seed, obj)
            close = np.abs(pixels - target).max(axis=2) <= 12  # (size, size)
            inside = np.zeros_like(close)
            for other in annotation.objects:
                if other.color == obj.color:
                    ox, oy, ow, oh = other.bbox
                    inside[oy : oy + oh, ox : ox + ow] = True
            assert not (close & ~inside).any(), f"{obj.color} pixels outside its boxes ({seed})"
            box = close[y : y + h, x : x + w]
            # the drawn shape touches all four sides of its box
            assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()


def test_objects_do_not_overlap_and_sizes_are_distinct():
    smalls, larges = [], []
    for seed in range(40):
        _, annotation = _scene(seed)
        boxes = [obj.bbox for obj in annotation.objects]
        for i, (x, y, w, h) in enumerate(boxes):
            for ox, oy, ow, oh in boxes[i + 1 :]:
                assert x + w <= ox or ox + ow <= x or y + h <= oy or oy + oh <= y
        for obj in annotation.objects:
            side = max(obj.bbox[2], obj.bbox[3])
            (smalls if obj.size == "small" else larges).append(side)
    assert max(smalls) < min(larges)


def test_scene_captions_are_varied_and_only_name_objects_that_are_there():
    pattern = re.compile(
        rf"\b({'|'.join(OBJECT_COLOURS)}) ({'|'.join(plural(c) for c in CATEGORIES)}|{'|'.join(CATEGORIES)})\b"
    )
    for seed in range(30):
        _, annotation = _scene(seed)
        assert len(annotation.captions) == 5
        assert len(set(annotation.captions)) == 5
        present = {(obj.color, obj.category) for obj in annotation.objects}
        for caption in annotation.captions:
            assert annotation.background.split()[-1] in caption or "background" not in caption
            for colour, noun in pattern.findall(caption.lower()):
                category = (
                    noun
                    if noun in CATEGORIES
                    else CATEGORIES[[plural(c) for c in CATEGORIES].index(noun)]
                )
                assert (colour, category) in present, (caption, present)


def test_counts_in_captions_are_right():
    for seed in range(30):
        _, annotation = _scene(seed)
        for caption in annotation.captions:
            match = re.match(r"(One|Two|Three|Four|Five) shapes? on", caption)
            if match:
                words = ["one", "two", "three", "four", "five"]
                assert words.index(match.group(1).lower()) + 1 == len(annotation.objects)


def test_bad_scene_config_is_refused():
    with pytest.raises(ValueError, match="min_objects"):
        SceneConfig(min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match="at least 32"):
        SceneConfig(size=16)
