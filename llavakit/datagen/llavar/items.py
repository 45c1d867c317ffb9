"""What every step of the LLaVAR pipeline shares: which images, which shard, where progress is kept.

The steps (`filter`, `cluster`, `noisy`, `conversations` in this package) take images
from a folder or from lists written by an earlier step (`kept.jsonl`, `cluster_007.jsonl`), keep
the share of them that belongs to their shard, and record each finished image in an append-only
journal as soon as it is done. A journal is named after its step and shard
(`ocr-shard00001-of00004.jsonl`); a run skips the images found finished in any journal of its
step, whatever shard wrote it. So four processes can run shards 0-3 side by side, and one
unsharded run afterwards finds everything done and writes the combined output.

Journals of other shards may be growing while they are read, so they are only ever read here
(a torn last line is ignored, not repaired); only a run's own journal is appended to.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llavakit.datagen.journal import parse_journal

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
"""File endings taken for images when a folder is scanned (case-insensitive)."""


@dataclass(frozen=True)
class ImageItem:
    """One image to process."""

    key: str
    """Path relative to the image folder, with `/` separators: the `image` field of records."""
    path: Path
    """Where the file is read from."""
    listed: dict[str, Any] | None = None
    """The record of the list it came from, if any (may carry OCR already done, see `ocr`)."""


@dataclass(frozen=True)
class Shard:
    """This process's share of the work: items whose position modulo `count` equals `index`."""

    count: int = 1
    index: int = 0

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"--num-shards must be at least 1, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(
                f"--shard-index must be in [0, {self.count - 1}] with --num-shards {self.count}, "
                f"got {self.index}"
            )

    @property
    def suffix(self) -> str:
        """ "" when unsharded, else e.g. "-shard00001-of00004"."""
        return "" if self.count == 1 else f"-shard{self.index:05d}-of{self.count:05d}"

    def select(self, items: Sequence[ImageItem]) -> list[ImageItem]:
        return [item for position, item in enumerate(items) if position % self.count == self.index]

    def output(self, path: Path) -> Path:
        """`path` with the shard suffix before its extension (data.json -> data-shard...json)."""
        return path.with_name(f"{path.stem}{self.suffix}{path.suffix}")


def list_images(folder: str | Path) -> list[ImageItem]:
    """Image files under `folder` (recursively), sorted by relative path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder not found")
    items = [
        ImageItem(path.relative_to(folder).as_posix(), path)
        for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
    ]
    if not items:
        raise ValueError(
            f"{folder}: no images found (looked for {', '.join(IMAGE_SUFFIXES)} files, recursively)"
        )
    return sorted(items, key=lambda item: item.key)


def read_image_list(path: str | Path, images: str | Path | None = None) -> list[ImageItem]:
    """Items of a JSONL list written by a previous step (records with `image` and `path`).

    With `images`, files are looked up as `images/<image>`; otherwise the record's `path` is used.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image list not found")
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            key = record["image"]
            if not isinstance(key, str) or not key:
                raise TypeError("'image' is not a non-empty string")
            file = Path(images) / key if images is not None else Path(record["path"])
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(
                f"{path}:{number}: expected a JSON object with 'image' (and 'path' unless "
                f"--images is given): {error}"
            ) from error
        items.append(ImageItem(key, file, record))
    return items


def gather_items(
    images: str | Path | None, lists: Sequence[str | Path] = (), shard: Shard = Shard()
) -> list[ImageItem]:
    """The items of this shard: from lists if given (first occurrence of a key wins), else the
    folder."""
    if lists:
        seen: dict[str, ImageItem] = {}
        for list_path in lists:
            for item in read_image_list(list_path, images):
                seen.setdefault(item.key, item)
        items = list(seen.values())
        if not items:
            raise ValueError(f"no images listed in {', '.join(map(str, lists))}")
    elif images is not None:
        items = list_images(images)
    else:
        raise ValueError("give an image folder (--images) or image lists (--list)")
    return shard.select(items)


# ---- journals ------------------------------------------------------------------------------------
def journal_folder(out: Path) -> Path:
    """Where a step writing the file `out` keeps its journals: `<out stem>.journal/` beside it."""
    return out.with_name(f"{out.stem}.journal")


def journal_file(folder: Path, step: str, shard: Shard) -> Path:
    """This run's own journal for `step`."""
    return folder / f"{step}{shard.suffix}.jsonl"


def read_journals(folder: Path, step: str) -> dict[str, dict[str, Any]]:
    """Finished items of every journal of `step` in `folder` (all shards), by key.

    Read-only: a torn last line (a run killed mid-write, or a shard writing right now) is
    skipped; a broken line anywhere else is an error naming the file and line.
    """
    finished: dict[str, dict[str, Any]] = {}
    if not folder.is_dir():
        return finished
    for path in sorted(folder.glob(f"{step}*.jsonl")):
        if path.stem != step and not path.stem.startswith(f"{step}-shard"):
            continue
        finished |= parse_journal(path.read_bytes(), path)[0]  # a torn last line is skipped
    return finished
