"""Text-rich images: text boxes hold the rendered ink, lines read top to bottom, fonts degrade."""

from __future__ import annotations

import random

import numpy as np
import pytest

from llavakit.world.text_images import BUILTIN_FONT, FontBook, TextImageConfig, render_text_image
from llavakit.world.vocabulary import TEXT_COLOURS, TEXT_KINDS, WORDS


@pytest.fixture(scope="module")
def fonts() -> FontBook:
    return FontBook()


def _render(seed: int, fonts: FontBook, **config):
    image, annotation = render_text_image(
        random.Random(seed), seed, f"{seed}.png", fonts, TextImageConfig(**config)
    )
    return np.asarray(image).astype(int), annotation


def test_same_seed_same_image(fonts):
    first, annotation = _render(5, fonts)
    again, annotation_again = _render(5, fonts)
    assert np.array_equal(first, again) and annotation == annotation_again


def test_text_boxes_contain_the_inked_text(fonts):
    kinds = set()
    for seed in range(40):
        pixels, annotation = _render(seed, fonts)
        kinds.add(annotation.kind)
        (board,) = annotation.objects
        assert board.category == annotation.kind
        board_rgb = np.array(TEXT_COLOURS[board.color])
        words = [t for t in annotation.texts if t.level == "word"]
        lines = [t for t in annotation.texts if t.level == "line"]
        assert words and lines
        for text in annotation.texts:
            x, y, w, h = text.bbox
            assert 0 <= x and 0 <= y and x + w <= 192 and y + h <= 192
            ink = np.array(TEXT_COLOURS[text.color])
            crop = pixels[y : y + h, x : x + w]
            # many pixels in the box have the text's colour, and they differ from the board
            assert (np.abs(crop - ink).max(axis=2) <= 30).mean() > 0.1, (seed, text)
            assert (np.abs(crop - board_rgb).max(axis=2) > 60).any()
            # the text lies on the board
            bx, by, bw, bh = board.bbox
            assert bx <= x and by <= y and x + w <= bx + bw and y + h <= by + bh
        for word in words:
            assert word.text.lower() in WORDS
            (line,) = [t for t in lines if t.line == word.line]
            assert word.text in line.text.split()
            lx, ly, lw, lh = line.bbox
            x, y, w, h = word.bbox
            assert lx <= x and ly <= y and x + w <= lx + lw and y + h <= ly + lh
        tops = [t.bbox[1] for t in sorted(lines, key=lambda t: t.line)]
        assert tops == sorted(tops), "lines should be in reading order"
        assert annotation.lines() == [t.text for t in sorted(lines, key=lambda t: t.line)]
        assert any(word.text in caption for caption in annotation.captions for word in words)
    assert kinds == set(TEXT_KINDS)


def test_normal_text_is_large_and_small_text_is_small(fonts):
    normal = [t for s in range(30) for t in _render(s, fonts)[1].texts if t.level == "word"]
    small = [
        t
        for s in range(30)
        for t in _render(s, fonts, small_text=True)[1].texts
        if t.level == "word"
    ]
    assert np.mean([t.bbox[3] >= 16 for t in normal]) > 0.95
    assert max(t.bbox[3] for t in small) < 14
    assert all(t.font_px <= 12 for t in small)


def test_size_option_scales_the_image(fonts):
    pixels, annotation = _render(3, fonts, size=256)
    assert pixels.shape == (256, 256, 3) and annotation.width == 256


def test_missing_fonts_fall_back_to_pillows_font_with_a_warning(tmp_path):
    with pytest.warns(UserWarning, match="no DejaVu fonts"):
        fonts = FontBook(font_dirs=[tmp_path])
    assert fonts.names == [BUILTIN_FONT]
    _, annotation = _render(1, fonts)
    assert annotation.lines()
