"""Read the text in an image: OCR engines behind one interface, lines in original pixels.

LLaVAR ran PaddleOCR on images shrunk to a short edge of at most 384 pixels and merged the
detected lines into paragraphs by geometry; its teacher also saw a second OCR result (EasyOCR).
Here the default engine is PaddleOCR's PP-OCRv4 detector and recogniser through
`rapidocr-onnxruntime`, whose wheel ships the ONNX models (nothing is downloaded). Tesseract (the
Debian `tesseract-ocr` program) and EasyOCR (when installed with its models) plug into the same
`OcrEngine` interface, so a pipeline can ask two engines.

Every engine reports lines in the pixels of the image it was given; `read_image` shrinks the
image first and maps the boxes back, so callers always get original-image coordinates. Lines are
merged into paragraphs by `ocr/layout.py`; the `llavakit ocr` command is `cli/ocr.py`.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from PIL import Image

from llavakit.datagen.ocr import DEFAULT_SHORT_EDGE, ENGINE_NAMES

Point = tuple[float, float]


@dataclass(frozen=True)
class OcrLine:
    """One line of recognised text."""

    text: str
    box: tuple[Point, Point, Point, Point]
    """Corners (x, y) clockwise from the top-left, in the pixels of the original image."""
    confidence: float
    """Recogniser confidence in [0, 1]."""

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """Axis-aligned (x1, y1, x2, y2) around the box."""
        xs = [x for x, _ in self.box]
        ys = [y for _, y in self.box]
        return min(xs), min(ys), max(xs), max(ys)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "box": [[round(x, 1), round(y, 1)] for x, y in self.box],
            "confidence": round(self.confidence, 4),
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "OCR line") -> OcrLine:
        """Inverse of `to_dict`; also takes a box given as [x1, y1, x2, y2]."""
        try:
            text, box, confidence = data["text"], data["box"], float(data["confidence"])
            if len(box) == 4 and all(isinstance(v, (int, float)) for v in box):
                x1, y1, x2, y2 = (float(v) for v in box)
                box = [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]
            corners = tuple((float(x), float(y)) for x, y in box)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"{source}: expected {{'text', 'box' (4 points or x1,y1,x2,y2), 'confidence'}}, "
                f"got {data!r:.200}"
            ) from error
        if not isinstance(text, str) or len(corners) != 4:
            raise ValueError(f"{source}: 'text' must be a string and 'box' 4 points: {data!r:.200}")
        return cls(text, corners, confidence)  # type: ignore[arg-type]

    def scaled(self, factor: float) -> OcrLine:
        """The same line with its box divided by `factor` (working size -> original size)."""
        box = tuple((x / factor, y / factor) for x, y in self.box)
        return OcrLine(self.text, box, self.confidence)  # type: ignore[arg-type]


class OcrEngine(Protocol):
    """Anything that finds and reads text lines in an RGB image."""

    name: str
    """Recorded with results, e.g. "rapidocr"."""

    def read(self, image: Image.Image) -> list[OcrLine]:
        """Lines found in `image`, boxes in its own pixels, in the engine's order."""
        ...


class OcrEngineUnavailable(RuntimeError):
    """The requested engine (or its models) is not installed; the message says what to install."""


# ---- engines -------------------------------------------------------------------------------------
class RapidOcrEngine:
    """PaddleOCR PP-OCRv4 (detection + recognition) through rapidocr-onnxruntime, on the CPU.

    The detector runs at the image's own size (up to 960 px on the long side, PaddleOCR's
    default) rather than rapidocr's default of enlarging every image to a 736 px short edge, which
    would undo the 384 px shrink. The recogniser, trained mostly on Chinese, often drops the
    spaces between English words; `restore_word_spaces` puts them back from the pixels.
    """

    name = "rapidocr"

    def __init__(self, threads: int = 0):
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as error:
            raise OcrEngineUnavailable(
                "OCR engine 'rapidocr' needs rapidocr-onnxruntime: pip install 'llavakit[ocr]'"
            ) from error
        options: dict[str, Any] = {"det_limit_type": "max", "det_limit_side_len": 960}
        if threads > 0:
            options.update(intra_op_num_threads=threads, inter_op_num_threads=1)
        self._ocr = RapidOCR(**options)

    def read(self, image: Image.Image) -> list[OcrLine]:
        rgb = image.convert("RGB")
        # Passing any keyword resets rapidocr's thresholds to these defaults, so all are given;
        # text_score=0 keeps every line: callers choose their own confidence threshold.
        results, _ = self._ocr(
            rgb, return_word_box=True, text_score=0.0, box_thresh=0.5, unclip_ratio=1.6
        )
        gray = np.asarray(rgb.convert("L"))  # (H, W) uint8
        lines = []
        for entry in results or []:
            box, text, confidence, char_boxes = entry[0], entry[1], entry[2], entry[3]
            text = restore_word_spaces(gray, text, char_boxes).strip()
            if text:
                corners = tuple((float(x), float(y)) for x, y in box)
                lines.append(OcrLine(text, corners, float(confidence)))  # type: ignore[arg-type]
        return lines


class TesseractEngine:
    """The `tesseract` program (Debian: tesseract-ocr + tesseract-ocr-eng), one call per image."""

    name = "tesseract"

    def __init__(self, threads: int = 0, language: str = "eng"):
        self._program = shutil.which("tesseract")
        if self._program is None:
            raise OcrEngineUnavailable(
                "OCR engine 'tesseract' needs the tesseract program: "
                "apt-get install tesseract-ocr tesseract-ocr-eng (or brew install tesseract)"
            )
        self._language = language
        self._threads = threads

    def read(self, image: Image.Image) -> list[OcrLine]:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
        environment = {"OMP_THREAD_LIMIT": str(self._threads)} if self._threads > 0 else {}
        completed = subprocess.run(
            [self._program, "stdin", "stdout", "-l", self._language, "tsv"],
            input=buffer.getvalue(),
            capture_output=True,
            timeout=300,
            env={**os.environ, **environment},
            check=False,
        )
        if completed.returncode != 0:
            message = completed.stderr.decode("utf-8", "replace").strip()
            raise RuntimeError(f"tesseract failed (exit {completed.returncode}): {message}")
        return parse_tesseract_tsv(completed.stdout.decode("utf-8", "replace"))


def parse_tesseract_tsv(tsv: str) -> list[OcrLine]:
    """Tesseract's word rows (level 5) grouped into its lines; confidence = mean word conf / 100."""
    rows = [row.split("\t") for row in tsv.splitlines()]
    if not rows or rows[0][:1] != ["level"]:
        return []
    header = rows[0]
    column = {name: index for index, name in enumerate(header)}
    words: dict[tuple[str, ...], list[tuple[str, float, float, float, float, float]]] = {}
    for row in rows[1:]:
        if len(row) != len(header) or row[column["level"]] != "5":
            continue
        text, confidence = row[column["text"]].strip(), float(row[column["conf"]])
        if not text or confidence < 0:
            continue
        left, top = float(row[column["left"]]), float(row[column["top"]])
        width, height = float(row[column["width"]]), float(row[column["height"]])
        line_id = tuple(
            row[column[name]] for name in ("page_num", "block_num", "par_num", "line_num")
        )
        words.setdefault(line_id, []).append((text, confidence, left, top, width, height))
    lines = []
    for entries in words.values():
        x1 = min(e[2] for e in entries)
        y1 = min(e[3] for e in entries)
        x2 = max(e[2] + e[4] for e in entries)
        y2 = max(e[3] + e[5] for e in entries)
        text = " ".join(e[0] for e in entries)
        confidence = sum(e[1] for e in entries) / len(entries) / 100.0
        lines.append(OcrLine(text, ((x1, y1), (x2, y1), (x2, y2), (x1, y2)), confidence))
    return lines


class EasyOcrEngine:
    """EasyOCR (English) with models already on disk; llavakit never lets it download them."""

    name = "easyocr"

    def __init__(self, threads: int = 0):
        try:
            import easyocr
        except ImportError as error:
            raise OcrEngineUnavailable(
                "OCR engine 'easyocr' needs the easyocr package: pip install easyocr, and place "
                "its English models in ~/.EasyOCR/model (llavakit does not download them)"
            ) from error
        if threads > 0:
            import torch

            torch.set_num_threads(threads)
        try:
            self._reader = easyocr.Reader(["en"], gpu=False, download_enabled=False, verbose=False)
        except FileNotFoundError as error:
            raise OcrEngineUnavailable(
                f"EasyOCR models are missing ({error}); place them in ~/.EasyOCR/model"
            ) from error

    def read(self, image: Image.Image) -> list[OcrLine]:
        lines = []
        for box, text, confidence in self._reader.readtext(np.asarray(image.convert("RGB"))):
            corners = tuple((float(x), float(y)) for x, y in box)
            if text.strip():
                lines.append(OcrLine(text.strip(), corners, float(confidence)))  # type: ignore[arg-type]
        return lines


def make_engine(name: str, threads: int = 0) -> OcrEngine:
    """The engine called `name` (see ENGINE_NAMES); `threads` 0 lets the engine decide."""
    if name == "rapidocr":
        return RapidOcrEngine(threads)
    if name == "tesseract":
        return TesseractEngine(threads)
    if name == "easyocr":
        return EasyOcrEngine(threads)
    raise ValueError(f"unknown OCR engine {name!r}; expected one of {', '.join(ENGINE_NAMES)}")


# ---- word spaces ---------------------------------------------------------------------------------
def restore_word_spaces(
    gray: np.ndarray,
    text: str,
    char_boxes: Sequence[Any],
    pitch_ratio: float = 0.3,
    height_ratio: float = 0.35,
) -> str:
    """Insert the spaces a recogniser dropped, where the pixels show a gap between two words.

    `char_boxes` holds one box per character of `text` (rapidocr's `return_word_box`), placed at
    the recogniser's decoding positions. The line is binarised (Otsu, minority class = ink); an
    ink-free run of columns at least `pitch_ratio` x the median character pitch and
    `height_ratio` x the ink height wide is a word gap (a space is about a third of an em,
    letter gaps a tenth), and a space goes between the two characters on either side of it.
    Vertical lines and lines whose boxes do not match the text are returned unchanged.
    """
    import cv2

    if len(text) < 2 or len(char_boxes) != len(text):
        return text
    boxes = np.asarray(char_boxes, dtype=np.float32)  # (n_chars, 4, 2)
    if boxes.ndim != 3 or boxes.shape[1:] != (4, 2):
        return text
    x0, y0 = max(0, int(boxes[..., 0].min())), max(0, int(boxes[..., 1].min()))
    x1 = min(gray.shape[1], int(np.ceil(boxes[..., 0].max())) + 1)
    y1 = min(gray.shape[0], int(np.ceil(boxes[..., 1].max())) + 1)
    if x1 - x0 < 4 or y1 - y0 < 4 or (y1 - y0) > 1.5 * (x1 - x0):
        return text
    crop = np.ascontiguousarray(gray[y0:y1, x0:x1])  # (h, w)
    _, binary = cv2.threshold(crop, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    dark = binary == 0
    ink = dark if dark.mean() < 0.5 else ~dark  # (h, w) bool
    inked_rows = np.flatnonzero(ink.any(axis=1))
    if len(inked_rows) == 0:
        return text
    ink_height = inked_rows[-1] - inked_rows[0] + 1
    centers = boxes[..., 0].mean(axis=1) - x0  # (n_chars,)
    letters = [i for i, c in enumerate(text) if c != " "]
    if len(letters) < 3:
        return text
    pitch = float(np.median(np.diff(centers[letters])))
    if pitch <= 0:
        return text
    least_gap = max(pitch_ratio * pitch, height_ratio * ink_height)
    gaps = []
    start = None
    for x, inked in enumerate([*ink.any(axis=0).tolist(), True]):
        if not inked and start is None:
            start = x
        elif inked and start is not None:
            if x - start >= least_gap:
                gaps.append((start + x) / 2)
            start = None
    if not gaps:
        return text
    out = [text[0]]
    for i in range(1, len(text)):
        between = any(centers[i - 1] < gap < centers[i] for gap in gaps)
        if between and text[i] != " " and text[i - 1] != " ":
            out.append(" ")
        out.append(text[i])
    return "".join(out)


# ---- reading an image ----------------------------------------------------------------------------
def working_scale(width: int, height: int, short_edge: int | None) -> float:
    """Factor (<= 1) that brings the short edge down to `short_edge`; 1 for None or small images."""
    if short_edge is None or min(width, height) <= short_edge:
        return 1.0
    return short_edge / min(width, height)


def read_image(
    image: Image.Image, engine: OcrEngine, short_edge: int | None = DEFAULT_SHORT_EDGE
) -> list[OcrLine]:
    """OCR `image` shrunk to `short_edge` (None: full size); boxes in the original's pixels."""
    if short_edge is not None and short_edge < 8:
        raise ValueError(f"OCR short edge must be at least 8 pixels, got {short_edge}")
    rgb = image.convert("RGB")
    scale = working_scale(rgb.width, rgb.height, short_edge)
    if scale < 1.0:
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
    lines = engine.read(rgb)
    return [line.scaled(scale) for line in lines] if scale < 1.0 else lines


def confident(lines: Sequence[OcrLine], min_confidence: float) -> list[OcrLine]:
    """Lines at or above the confidence threshold, with some letter or digit in them."""
    return [
        line
        for line in lines
        if line.confidence >= min_confidence and any(c.isalnum() for c in line.text)
    ]
