"""Stage-1 (feature alignment) data: image-caption pairs -> single-turn LLaVA records.

Each caption becomes one turn: a "describe briefly" question drawn from our pool (seeded by the
record id, so the same input always gives the same data) and the caption as the answer. With
`plain` (LLaVA-1.5 style) the human turn is just `<image>`: the plain template drops it anyway.

Inputs: a COCO captions JSON (one record per caption), or rows with `image` and `caption`
columns (and an optional `id`) as JSONL, a JSON list, or a TSV whose first line names the columns.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llavakit.conversation import IMAGE_TOKEN
from llavakit.datagen.coco import load_coco_contexts
from llavakit.datagen.journal import write_records
from llavakit.datagen.prompts import draw_question, load_question_pool


@dataclass(frozen=True)
class CaptionPair:
    id: str
    image: str
    """Image path relative to the image folder."""
    caption: str


def _pairs_from_rows(path: Path, rows: Iterator[tuple[str, Any]]) -> Iterator[CaptionPair]:
    """Pairs from `(where, row)` items; ids default to the image's stem, made unique."""
    seen: dict[str, int] = {}
    for where, row in rows:
        if not isinstance(row, dict) or "image" not in row or "caption" not in row:
            raise ValueError(f"{path}: {where} should be an object with 'image' and 'caption'")
        base = str(row.get("id") or Path(str(row["image"])).stem)
        seen[base] = seen.get(base, 0) + 1
        record_id = base if seen[base] == 1 else f"{base}_{seen[base] - 1}"
        yield CaptionPair(record_id, str(row["image"]), str(row["caption"] or "").strip())


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    yield f"line {number}", json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{number}: not valid JSON ({error})") from error


def _tsv_rows(path: Path) -> Iterator[tuple[str, Any]]:
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [name.strip().lower() for name in next(reader, [])]
        if "image" not in header or "caption" not in header:
            raise ValueError(
                f"{path}: the first line must name the columns, including 'image' and 'caption'; "
                f"found {header}"
            )
        for number, values in enumerate(reader, start=2):
            if not any(value.strip() for value in values):
                continue
            if len(values) != len(header):
                raise ValueError(
                    f"{path}:{number}: {len(values)} columns, the header has {len(header)}"
                )
            yield f"line {number}", dict(zip(header, values))


def read_caption_pairs(path: str | Path) -> Iterator[CaptionPair]:
    """Image-caption pairs of a COCO captions JSON, a JSON list, a JSONL or a TSV file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: captions file not found")
    if path.suffix == ".jsonl":
        yield from _pairs_from_rows(path, _jsonl_rows(path))
    elif path.suffix == ".tsv":
        yield from _pairs_from_rows(path, _tsv_rows(path))
    elif path.suffix == ".json":
        with open(path, encoding="utf-8") as handle:
            try:
                data = json.load(handle)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}: not valid JSON ({error})") from error
        if isinstance(data, list):
            yield from _pairs_from_rows(path, ((f"item {i}", row) for i, row in enumerate(data)))
            return
        for context in load_coco_contexts(None, path).contexts:
            for index, caption in enumerate(context["captions"]):
                yield CaptionPair(f"{context['image_id']}_{index}", context["file_name"], caption)
    else:
        raise ValueError(f"{path}: expected a .json, .jsonl or .tsv captions file")


def pretrain_record(pair: CaptionPair, question: str, plain: bool) -> dict[str, Any]:
    human = IMAGE_TOKEN if plain else f"{IMAGE_TOKEN}\n{question}"
    return {
        "id": pair.id,
        "image": pair.image,
        "conversations": [
            {"from": "human", "value": human},
            {"from": "gpt", "value": pair.caption},
        ],
    }


@dataclass
class PretrainOptions:
    """`llavakit datagen pretrain`: image-caption pairs in, stage-1 records out."""

    captions: Path
    """COCO captions JSON, or JSONL / JSON list / TSV rows with image and caption columns."""
    out: Path
    """Output file: JSON list, or JSONL when it ends in .jsonl (written atomically)."""
    images: Path
    """Image folder the pairs' image paths are relative to; pairs whose file is missing are skipped."""
    plain: bool = False
    """LLaVA-1.5 style: the human turn is only `<image>`."""
    seed: int = 0
    """Seed of the question draw (with each record's id)."""
    prompts_dir: Path | None = None
    """Folder with a `brief_questions.txt` to replace our pool."""


def run_pretrain_datagen(options: PretrainOptions) -> str:
    """Write the stage-1 records; returns the report printed at the end."""
    if not options.images.is_dir():
        raise FileNotFoundError(f"{options.images}: image folder not found")
    pool = load_question_pool("brief_questions", options.prompts_dir)
    records, empty, missing = [], 0, 0
    for pair in read_caption_pairs(options.captions):
        if not pair.caption:
            empty += 1
        elif not (options.images / pair.image).is_file():
            missing += 1
        else:
            question = draw_question(pool, options.seed, pair.id)
            records.append(pretrain_record(pair, question, options.plain))
    if not records:
        raise ValueError(
            f"{options.captions}: no usable pair ({empty} with an empty caption, "
            f"{missing} whose image is not in {options.images})"
        )
    write_records(options.out, records)
    lines = [f"wrote {len(records)} records to {options.out}"]
    if empty:
        lines.append(f"skipped {empty} pairs with an empty caption")
    if missing:
        lines.append(f"skipped {missing} pairs whose image is not in {options.images}")
    return "\n".join(lines)
