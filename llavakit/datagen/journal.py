"""Kill-safe progress for long generation runs, and atomic output files.

`Journal` is an append-only JSONL file with one finished item per line, keyed by `key`. A run
killed at any moment (even `kill -9`) leaves at worst a torn last line, which the next run drops
before appending. Whatever a rerun finds in the journal it does not ask for again.
`write_records` writes a whole output file to a temporary name and renames it, so readers never
see a half-written file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

from llavakit.files import write_text_atomic


def parse_journal(data: bytes, path: Path) -> tuple[dict[str, dict[str, Any]], int]:
    """A journal's items by key (a later line wins) and the byte length of a torn last line
    (0 if none): the one line a kill may leave unfinished. A broken line anywhere else is an
    error naming `path` and the line."""
    lines = data.split(b"\n")
    items: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            key = item["key"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
            if number == len(lines):  # the last line, with no newline after it: torn by a kill
                return items, len(line)
            raise ValueError(
                f"{path}:{number}: journal line is not a JSON object with a 'key' ({error})"
            ) from error
        items[key] = item
    return items, 0


class Journal:
    """Append-only JSONL of `{"key": ..., **item}` lines; read it back with `load`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._handle: IO[str] | None = None

    def load(self) -> dict[str, dict[str, Any]]:
        """Items by key (a later line wins); drops a torn last line so appends stay parseable."""
        if not self.path.exists():
            return {}
        data = self.path.read_bytes()
        items, torn = parse_journal(data, self.path)
        if torn:
            self._truncate(len(data) - torn)
        elif data and not data.endswith(b"\n"):  # complete JSON whose newline was cut off
            with open(self.path, "ab") as handle:
                handle.write(b"\n")
        return items

    def _truncate(self, size: int) -> None:
        with open(self.path, "r+b") as handle:
            handle.truncate(size)

    def append(self, key: str, item: dict[str, Any]) -> None:
        """Write one finished item; the file is created on the first append, not before."""
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8")
        self._handle.write(json.dumps({"key": key, **item}, ensure_ascii=False) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def write_records(path: str | Path, records: list[dict[str, Any]]) -> None:
    """Write records atomically: a JSON list, or JSONL when the name ends in `.jsonl`."""
    path = Path(path)
    if path.suffix == ".jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    else:
        text = json.dumps(records, ensure_ascii=False, indent=1) + "\n"
    write_text_atomic(path, text, make_parents=True)
