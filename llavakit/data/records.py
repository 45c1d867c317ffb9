"""Reading and validating LLaVA-format records.

The de-facto format is a JSON list (or JSONL) of
    {"id": ..., "image": "rel/path.jpg" | ["a.jpg", "b.jpg"] (optional), "conversations": [
        {"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value": "..."}, ...]}
Every problem is reported with the file, the record's position and id, and the field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llavakit.conversation import IMAGE_TOKEN

_HUMAN = ("human", "user")
_GPT = ("gpt", "assistant")


@dataclass
class RecordProblem:
    """Why one record cannot be used."""

    file: str
    index: int
    record_id: str
    field: str
    reason: str

    def __str__(self) -> str:
        return (
            f"{self.file} record #{self.index} (id={self.record_id}): {self.field}: {self.reason}"
        )


class DataError(ValueError):
    """Bad data that the user must fix; lists the problems found."""

    def __init__(self, problems: list[RecordProblem], total: int | None = None, hint: str = ""):
        self.problems = problems
        shown = "\n  ".join(str(p) for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        of = f" of {total}" if total is not None else ""
        hint = f"\n{hint}" if hint else ""
        n_records = count_records(problems)
        super().__init__(f"{n_records}{of} record(s) are invalid:\n  {shown}{more}{hint}")


def count_records(problems: Iterable[RecordProblem]) -> int:
    """How many distinct records the problems are about (a record may have several)."""
    return len({(p.file, p.index) for p in problems})


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Load a JSON list or JSONL file of records (errors name the file and line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl" or (text.lstrip()[:1] == "{"):
        records = []
        for line_no, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise DataError(
                    [
                        RecordProblem(
                            str(path), line_no - 1, "?", f"line {line_no}", f"not JSON: {error}"
                        )
                    ]
                ) from None
        return records
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON: {error}") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return data


def record_images(record: dict[str, Any]) -> list[str]:
    image = record.get("image")
    if image is None:
        return []
    return [image] if isinstance(image, str) else list(image)


def validate_record(
    record: Any, image_folder: Path | None, file: str = "<data>", index: int = 0
) -> list[RecordProblem]:
    """Every problem with one record (empty list when it is usable)."""
    if not isinstance(record, dict):
        return [RecordProblem(file, index, "?", "record", "expected a JSON object")]
    rid = str(record.get("id", f"#{index}"))

    def problem(field: str, reason: str) -> RecordProblem:
        return RecordProblem(file, index, rid, field, reason)

    problems: list[RecordProblem] = []
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        return [problem("conversations", "missing or empty list of turns")]
    image = record.get("image")
    if image is not None and not (
        isinstance(image, str)
        or (isinstance(image, list) and all(isinstance(i, str) for i in image))
    ):
        problems.append(problem("image", "expected a path string or a list of path strings"))
        image = None
    images = record_images(record) if image is not None else []
    n_tags = 0
    for t, turn in enumerate(turns):
        where = f"conversations[{t}]"
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            problems.append(problem(where, 'expected {"from": ..., "value": ...}'))
            continue
        expected = _HUMAN if t % 2 == 0 else _GPT
        if turn["from"] not in expected:
            problems.append(
                problem(
                    f"{where}.from",
                    f"expected {expected[0]!r} (turns alternate human/gpt), got {turn['from']!r}",
                )
            )
        value = turn["value"]
        if not isinstance(value, str):
            problems.append(problem(f"{where}.value", "expected a string"))
            continue
        if turn["from"] in _GPT and not value.strip():
            problems.append(problem(f"{where}.value", "empty answer"))
        n_tags += value.count(IMAGE_TOKEN)
    if len(turns) % 2 == 1:
        problems.append(problem("conversations", "ends with a human turn (no answer to train on)"))
    if n_tags != len(images):
        problems.append(
            problem(
                "image", f"{n_tags} {IMAGE_TOKEN} tag(s) in the text but {len(images)} image(s)"
            )
        )
    if image_folder is not None:
        for name in images:
            if not (image_folder / name).is_file():
                problems.append(problem("image", f"file {image_folder / name} does not exist"))
    return problems


def validate_records(
    records: Iterable[Any], image_folder: Path | None, file: str
) -> list[RecordProblem]:
    return [p for i, r in enumerate(records) for p in validate_record(r, image_folder, file, i)]
