"""OCR over many images: across local processes, journaled so an interrupted run resumes.

Every LLaVAR step starts from OCR results, and OCR is the slow part (about a third of a second
per image on one CPU core). `ocr_items` runs it once per image and appends each result to the
step's journal; images already in a journal, or listed with OCR done by an earlier step with the
same settings, are not read again. With `workers > 1` images are spread over that many worker
processes, each with its own single-threaded engine.
"""

from __future__ import annotations

import multiprocessing
import queue
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from llavakit.datagen.journal import Journal
from llavakit.datagen.llavar.items import ImageItem, Shard, journal_file, read_journals
from llavakit.datagen.ocr import DEFAULT_SHORT_EDGE
from llavakit.datagen.ocr.engines import OcrEngine, OcrLine, make_engine, read_image

MAX_PIXELS = 89_478_485
"""Images declaring more pixels than this are refused unread (Pillow's own bomb limit)."""


@dataclass(frozen=True)
class OcrConfig:
    """How images are read."""

    engine: str = "rapidocr"
    """OCR engine name (see `llavakit.datagen.ocr.engines.ENGINE_NAMES`)."""
    short_edge: int | None = DEFAULT_SHORT_EDGE
    """Shrink images to this short edge before OCR (LLaVAR: 384); None reads them at full size."""
    max_pixels: int = MAX_PIXELS
    """Larger images are reported as errors without being decoded (decompression bombs)."""

    def signature(self) -> dict[str, Any]:
        """What decides the result; stored with each result so changed settings re-run OCR."""
        return {"engine": self.engine, "short_edge": self.short_edge}


@dataclass
class OcrResult:
    """OCR of one image, or why there is none."""

    key: str
    path: str
    width: int = 0
    height: int = 0
    lines: list[OcrLine] = field(default_factory=list)
    error: str | None = None
    """Set when the image could not be read (corrupt, too large, ...); `lines` is then empty."""

    def to_dict(self, signature: dict[str, Any]) -> dict[str, Any]:
        return {
            "image": self.key,
            "path": self.path,
            "width": self.width,
            "height": self.height,
            "ocr": signature,
            "lines": [line.to_dict() for line in self.lines],
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> OcrResult:
        lines = [OcrLine.from_dict(line, source) for line in data.get("lines") or []]
        return cls(
            key=data["image"],
            path=data["path"],
            width=int(data.get("width") or 0),
            height=int(data.get("height") or 0),
            lines=lines,
            error=data.get("error"),
        )


def ocr_one(engine: OcrEngine, key: str, path: str, config: OcrConfig) -> OcrResult:
    """Load and read one image. An unusable image file gives a result with `error` set; an
    engine failure raises, naming the image."""
    from llavakit.image import ImageLoadError, load_image

    try:
        image = load_image(path, max_pixels=config.max_pixels)
    except ImageLoadError as error:
        return OcrResult(key, path, error=str(error))
    try:
        lines = read_image(image, engine, config.short_edge)
    except Exception as error:
        raise RuntimeError(f"OCR ({engine.name}) failed on {path}: {error}") from error
    return OcrResult(key, path, image.width, image.height, lines)


def _worker(
    config: OcrConfig, tasks: multiprocessing.Queue, results: multiprocessing.Queue
) -> None:
    """Worker process: read (key, path) tasks until None; send ("ok", dict) or ("fatal", text)."""
    try:
        engine = make_engine(config.engine, threads=1)
        while (task := tasks.get()) is not None:
            key, path = task
            results.put(("ok", ocr_one(engine, key, path, config).to_dict(config.signature())))
    except Exception as error:  # reported to the parent, which stops the run with this message
        results.put(("fatal", f"{type(error).__name__}: {error}"))


def run_ocr(items: Sequence[ImageItem], config: OcrConfig, workers: int = 1) -> Iterator[OcrResult]:
    """OCR results for `items`; in order with one worker, in completion order with several."""
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    if not items:
        return
    if workers == 1 or len(items) < 2:
        engine = make_engine(config.engine)
        for item in items:
            yield ocr_one(engine, item.key, str(item.path), config)
        return
    yield from _run_in_processes(items, config, min(workers, len(items)))


def _run_in_processes(
    items: Sequence[ImageItem], config: OcrConfig, workers: int
) -> Iterator[OcrResult]:
    # spawn, not fork: a forked copy of a parent holding onnxruntime/torch thread pools can hang.
    context = multiprocessing.get_context("spawn")
    tasks: multiprocessing.Queue = context.Queue()
    results: multiprocessing.Queue = context.Queue()
    for item in items:
        tasks.put((item.key, str(item.path)))
    for _ in range(workers):
        tasks.put(None)
    processes = [
        context.Process(target=_worker, args=(config, tasks, results), daemon=True)
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    try:
        for _ in range(len(items)):
            while True:
                try:
                    status, payload = results.get(timeout=1.0)
                    break
                except queue.Empty:
                    dead = [p for p in processes if p.exitcode not in (None, 0)]
                    if dead:
                        raise RuntimeError(
                            f"an OCR worker process died (exit code {dead[0].exitcode})"
                        ) from None
            if status == "fatal":
                raise RuntimeError(f"OCR worker failed: {payload}")
            yield OcrResult.from_dict(payload, "OCR worker")
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join(timeout=5)
        tasks.close()
        results.close()


def ocr_items(
    items: Sequence[ImageItem],
    config: OcrConfig,
    journal_dir: Path,
    shard: Shard = Shard(),
    workers: int = 1,
    progress: bool = True,
    step: str = "ocr",
) -> dict[str, OcrResult]:
    """OCR results for every item, by key: from journals, from the items' lists, or read now.

    New results are appended to this shard's journal of `step` in `journal_dir` one by one, so
    a killed run loses at most the images being read at that moment.
    """
    signature = config.signature()
    journal = Journal(journal_file(journal_dir, step, shard))
    journal.load()  # repairs a torn last line of our own journal before we append to it
    finished = read_journals(journal_dir, step)
    with journal:
        done: dict[str, OcrResult] = {}
        todo = []
        for item in items:
            stored = finished.get(item.key)
            listed = item.listed if item.listed is not None and "lines" in item.listed else None
            if stored is not None and stored.get("ocr") == signature:
                result = OcrResult.from_dict(stored, f"{journal_dir}: OCR of {item.key}")
            elif listed is not None and listed.get("ocr") == signature:
                result = OcrResult.from_dict(listed, f"list entry {item.key}")
                result.path = str(item.path)
                journal.append(item.key, result.to_dict(signature))
            else:
                todo.append(item)
                continue
            result.path = str(item.path)
            done[item.key] = result
        with tqdm(total=len(todo), desc="ocr", unit="img", disable=not progress) as bar:
            for result in run_ocr(todo, config, workers):
                journal.append(result.key, result.to_dict(signature))
                done[result.key] = result
                bar.update(1)
    return done
