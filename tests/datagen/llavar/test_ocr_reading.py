"""OCR: word recall on rendered text, boxes in original pixels, paragraphs, engines, `llavakit ocr`."""

from __future__ import annotations

import json
import re
import shutil
import struct
import sys
import zlib

import pytest
from llavar_images import render_lines, shapes_image, text_image
from PIL import Image

from llavakit.datagen.ocr.engines import OcrEngineUnavailable, OcrLine, make_engine, read_image
from llavakit.datagen.ocr.layout import merge_paragraphs, reading_order


@pytest.fixture(scope="module")
def engine():
    return make_engine("rapidocr")


def found_words(lines: list[OcrLine]) -> list[str]:
    return [word.lower() for line in lines for word in re.findall(r"[A-Za-z]+", line.text)]


def iou(a, b) -> float:
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def test_rapidocr_reads_rendered_words_with_spaces(engine):
    truth, hits = 0, 0
    for index in range(4):
        rendered = text_image(index)
        words = found_words([line for line in read_image(rendered.image, engine)])
        for word in rendered.words:
            if len(word) >= 3:
                truth += 1
                hits += word.lower() in words
    assert hits / truth >= 0.9, f"word recall {hits}/{truth}"


def test_boxes_are_in_original_pixels_after_shrinking(engine):
    rendered = render_lines(["Harbour Street"], size=(800, 600), px=48, origin=(260, 330))
    small = read_image(rendered.image, engine)  # read at a 384 px short edge
    full = read_image(rendered.image, engine, short_edge=None)
    for lines in (small, full):
        (line,) = [line for line in lines if "harbour" in line.text.lower()]
        assert iou(line.bounds, rendered.boxes[0]) > 0.5, (line.bounds, rendered.boxes[0])
        assert 0.0 <= line.confidence <= 1.0


def test_grayscale_cmyk_and_alpha_images_are_read(engine, tmp_path):
    from llavakit.datagen.llavar.ocr import OcrConfig, ocr_one

    rendered = text_image(1)
    rgba = rendered.image.convert("RGBA")
    rgba.putalpha(255)
    for mode, image in (
        ("L", rendered.image.convert("L")),
        ("CMYK", rendered.image.convert("CMYK")),
        ("RGBA", rgba),
    ):
        path = tmp_path / f"{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
        image.save(path)
        result = ocr_one(engine, path.name, str(path), OcrConfig())
        assert result.error is None
        assert "library" in found_words(result.lines), mode


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a canvas but carries (almost) no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def test_unreadable_images_give_an_error_naming_the_file(engine, tmp_path):
    from llavakit.datagen.llavar.ocr import OcrConfig, ocr_one

    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(12000, 12000))  # 144M pixels declared in a 60-byte file
    for path, reason in ((corrupt, "broken.png"), (bomb, "decompression bomb")):
        result = ocr_one(engine, path.name, str(path), OcrConfig())
        assert result.lines == [] and reason in result.error


def test_images_without_text_give_no_confident_lines(engine):
    from llavakit.datagen.ocr.engines import confident

    assert confident(read_image(shapes_image(3), engine), 0.7) == []
    assert read_image(Image.new("RGB", (5, 5), "white"), engine) == []


def test_paragraphs_keep_the_lines_of_a_sign_together(engine):
    sign = render_lines(
        ["HILLTOP", "COFFEE", "roasted daily"], size=(520, 400), px=30, origin=(40, 40)
    )
    render_lines(["parking at rear"], px=18, origin=(300, 340), image=sign.image)
    paragraphs = merge_paragraphs(read_image(sign.image, engine, short_edge=None))
    texts = [p.text.lower() for p in paragraphs]
    assert texts == ["hilltop coffee roasted daily", "parking at rear"], texts


def box(x1, y1, x2, y2):
    return ((x1, y1), (x2, y1), (x2, y2), (x1, y2))


def test_merge_paragraphs_by_geometry():
    lines = [
        OcrLine("right column", box(300, 12, 420, 32), 0.9),  # a second column, same size
        OcrLine("second line", box(10, 36, 150, 56), 0.9),
        OcrLine("first line", box(10, 10, 140, 30), 0.9),
        OcrLine("cut", box(155, 37, 190, 56), 0.9),  # the detector split this row in two
        OcrLine("BIG TITLE", box(10, 70, 200, 130), 0.9),  # much taller: its own paragraph
        OcrLine("far below", box(10, 400, 150, 420), 0.9),
    ]
    texts = [p.text for p in merge_paragraphs(lines)]
    assert texts == ["first line second line cut", "right column", "BIG TITLE", "far below"]


def test_reading_order_groups_rows():
    boxes = [(200, 12, 300, 30), (10, 10, 100, 30), (10, 50, 100, 70)]
    assert reading_order(boxes) == [1, 0, 2]


def test_ocr_line_round_trip_and_errors():
    line = OcrLine("Exit", box(1, 2, 30, 12), 0.875)
    assert OcrLine.from_dict(line.to_dict()) == line
    assert OcrLine.from_dict({"text": "Exit", "box": [1, 2, 30, 12], "confidence": 0.875}) == line
    with pytest.raises(ValueError, match="record 3"):
        OcrLine.from_dict({"text": "x", "box": [1, 2]}, "record 3")


def test_unknown_and_missing_engines_say_what_to_install(monkeypatch):
    with pytest.raises(ValueError, match="rapidocr, tesseract, easyocr"):
        make_engine("paddle")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(OcrEngineUnavailable, match="apt-get install tesseract-ocr"):
        make_engine("tesseract")
    monkeypatch.setitem(sys.modules, "easyocr", None)
    with pytest.raises(OcrEngineUnavailable, match="pip install easyocr"):
        make_engine("easyocr")


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract is not installed")
def test_tesseract_reads_the_same_sign():
    rendered = text_image(0)
    lines = read_image(rendered.image, make_engine("tesseract"))
    assert {"grand", "opening", "bread", "bakery"} <= set(found_words(lines))


def test_cli_prints_json_and_reports_bad_files(tmp_path, capsys):
    from llavakit.cli import main

    good = tmp_path / "sign.png"
    text_image(2).image.save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    assert main(["ocr", str(good), str(bad), "--json"]) == 1
    captured = capsys.readouterr()
    (record,) = [json.loads(line) for line in captured.out.splitlines()]
    assert record["image"] == str(good) and record["engine"] == "rapidocr"
    assert record["paragraphs"][0].lower().startswith("summer market")
    assert all(len(line["box"]) == 4 and line["confidence"] >= 0.7 for line in record["lines"])
    assert "bad.png" in captured.err

    assert main(["ocr", str(good), "--full-size", "--min-confidence", "0.5"]) == 0
    assert "SUMMER MARKET" in capsys.readouterr().out
