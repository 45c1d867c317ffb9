"""Decode every image a data set names, before training: in parallel, with progress, remembered.

`llavakit data check` and `llavakit train` run this same check (train through `load_entries`), so
a truncated PNG or JPEG, a zero-byte file or a text file named `.png` is reported with its record
before a run starts, instead of stopping it at some step with one of them named. Each image is
decoded exactly as training decodes it (`llavakit.image.load_image`).

Verdicts are remembered in a JSON file keyed by the image's absolute path, byte size and
modification time: a rerun decodes only images that are new or changed, so it is instant.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from tqdm import tqdm

from llavakit.data.records import RecordProblem, record_images
from llavakit.files import write_text_atomic
from llavakit.image import ImageLoadError, load_image

log = logging.getLogger(__name__)

CHECKER = "llavakit.image.load_image/1"
"""Names the rules the verdicts were reached by; a cache written under other rules is ignored
(change it when load_image starts accepting or refusing other files)."""
_CHUNK = 64  # images per task: few enough futures for millions of images, small enough to balance


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _verdict(path: Path) -> str | None:
    """None when the image loads as training will load it; else why it does not."""
    try:
        load_image(path)
    except ImageLoadError as error:
        return str(error)
    return None


def _verdicts(chunk: list[tuple[Path, str, tuple[int, int]]]) -> list[str | None]:
    return [_verdict(path) for path, _, _ in chunk]


def _stamp(path: Path) -> tuple[int, int] | None:
    """(size in bytes, mtime in ns) of a file; None when it is not there."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def _read_cache(path: Path | None) -> dict[str, list[Any]]:
    if path is None or not path.is_file():
        return {}
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        log.warning(
            "image check cache %s is unreadable (%s); checking every image again", path, error
        )
        return {}
    if not isinstance(document, dict) or document.get("checker") != CHECKER:
        return {}
    images = document.get("images")
    return images if isinstance(images, dict) else {}


def verify_images(
    paths: Iterable[str | Path],
    cache_file: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> dict[Path, str]:
    """Decode every distinct image once; returns those that cannot be used, with the reason.

    Images whose size and mtime match the cache's verdict are not decoded again; threads decode
    the rest (Pillow's decoders release the GIL). New verdicts are added to `cache_file`.
    """
    cache_path = Path(cache_file) if cache_file is not None else None
    cache = _read_cache(cache_path)
    unique = list(dict.fromkeys(Path(p) for p in paths))
    bad: dict[Path, str] = {}
    todo: list[tuple[Path, str, tuple[int, int]]] = []
    for path in unique:
        stamp = _stamp(path)
        if stamp is None:
            bad[path] = f"cannot load image {path}: no such file"
            continue
        key = os.path.abspath(path)
        known = cache.get(key)
        if isinstance(known, list) and len(known) == 3 and tuple(known[:2]) == stamp:
            if known[2] is not None:
                bad[path] = known[2]
            continue
        todo.append((path, key, stamp))
    if todo:
        chunks = [todo[start : start + _CHUNK] for start in range(0, len(todo), _CHUNK)]
        bar = tqdm(total=len(todo), desc="checking images", unit="img", disable=not progress)
        with bar, ThreadPoolExecutor(workers or default_workers()) as pool:
            futures = [pool.submit(_verdicts, chunk) for chunk in chunks]
            for future in as_completed(futures):
                bar.update(len(future.result()))
        for chunk, future in zip(chunks, futures):
            for (path, key, stamp), reason in zip(chunk, future.result()):
                cache[key] = [*stamp, reason]
                if reason is not None:
                    bad[path] = reason
        if cache_path is not None:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(cache_path, json.dumps({"checker": CHECKER, "images": cache}))
    log.info(
        "images: %d checked (%d decoded now, %d remembered), %d unusable",
        len(unique),
        len(todo),
        len(unique) - len(todo),
        len(bad),
    )
    return bad


def image_problems(
    records: Sequence[tuple[int, dict[str, Any]]], folder: Path, file: str, bad: dict[Path, str]
) -> list[RecordProblem]:
    """One problem per (record, image) whose image `verify_images` found unusable."""
    return [
        RecordProblem(file, index, str(record.get("id", f"#{index}")), "image", bad[folder / name])
        for index, record in records
        for name in record_images(record)
        if folder / name in bad
    ]
