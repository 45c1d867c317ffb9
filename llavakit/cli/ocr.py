"""`llavakit ocr IMAGE...`: print the text of images, paragraph by paragraph (or as JSON)."""

from __future__ import annotations

import argparse
from pathlib import Path

from llavakit.cli import CommandError

ENGINES = ("rapidocr", "tesseract", "easyocr")


def _run(args: argparse.Namespace) -> int:
    from llavakit.datagen.ocr import (
        DEFAULT_MIN_CONFIDENCE,
        DEFAULT_SHORT_EDGE,
        OcrEngineUnavailable,
        print_ocr,
    )

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
        choices=ENGINES,
        default="rapidocr",
        help="OCR engine (default rapidocr; tesseract needs the tesseract-ocr package)",
    )
    parser.set_defaults(func=_run)
