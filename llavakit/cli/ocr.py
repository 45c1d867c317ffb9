"""`llavakit ocr IMAGE...`: print the text of images, paragraph by paragraph (or as JSON)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from llavakit.cli import CommandError
from llavakit.datagen.ocr import DEFAULT_MIN_CONFIDENCE, DEFAULT_SHORT_EDGE, ENGINE_NAMES


def print_ocr(
    paths: Sequence[str | Path],
    engine_name: str = "rapidocr",
    short_edge: int | None = DEFAULT_SHORT_EDGE,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    as_json: bool = False,
    out: IO[str] | None = None,
) -> int:
    """Paragraphs per image (or one JSON object per line) on `out`.

    Unreadable images are reported on stderr and skipped; returns 1 if any was, else 0.
    """
    from llavakit.datagen.ocr.engines import confident, make_engine, read_image
    from llavakit.datagen.ocr.layout import merge_paragraphs
    from llavakit.image import ImageLoadError, load_image

    out = out or sys.stdout
    engine = make_engine(engine_name)
    failures = 0
    for path in paths:
        try:
            image = load_image(path)
        except ImageLoadError as error:
            print(f"llavakit ocr: {error}", file=sys.stderr)
            failures += 1
            continue
        lines = confident(read_image(image, engine, short_edge), min_confidence)
        paragraphs = merge_paragraphs(lines)
        if as_json:
            record = {
                "image": str(path),
                "width": image.width,
                "height": image.height,
                "engine": engine.name,
                "lines": [line.to_dict() for line in lines],
                "paragraphs": [p.text for p in paragraphs],
            }
            print(json.dumps(record, ensure_ascii=False), file=out)
        else:
            if len(paths) > 1:
                print(f"== {path}", file=out)
            for paragraph in paragraphs:
                print(paragraph.text, file=out)
    return 1 if failures else 0


def _run(args: argparse.Namespace) -> int:
    from llavakit.datagen.ocr.engines import OcrEngineUnavailable

    try:
        return print_ocr(
            args.images,
            engine_name=args.engine,
            short_edge=None if args.full_size else DEFAULT_SHORT_EDGE,
            min_confidence=(
                DEFAULT_MIN_CONFIDENCE if args.min_confidence is None else args.min_confidence
            ),
            as_json=args.json,
        )
    except OcrEngineUnavailable as error:
        raise CommandError(str(error)) from error


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ocr",
        help="read the text in images (PaddleOCR PP-OCRv4, no download)",
        description="Read the text in images, as LLaVAR does: shrink to a 384 px short edge, "
        "detect and recognise lines, merge them into paragraphs. Prints one paragraph per line, "
        "or with --json one JSON object per image (lines with boxes in original pixels and "
        "confidences, and paragraphs).",
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    parser.add_argument("--json", action="store_true", help="one JSON object per image")
    parser.add_argument(
        "--full-size", action="store_true", help="read at full resolution (slower, finer text)"
    )
    parser.add_argument(
        "--min-confidence",
        type=float,
        metavar="C",
        help="drop lines the recogniser is less sure of (0-1, default 0.7)",
    )
    parser.add_argument(
        "--engine",
        choices=ENGINE_NAMES,
        default="rapidocr",
        help="OCR engine (default rapidocr; tesseract needs the tesseract-ocr package)",
    )
    parser.set_defaults(func=_run)
