"""`llavakit data check`: what a data file holds and what is wrong with it, before training.

It finds what `llavakit train` would refuse, by the same code: record structure
(`records.validate_records`) and every image decoded (`image_check.verify_images`); with a
checkpoint, also every record rendered with its template (token lengths, truncation, records
whose every answer lies past max_length).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llavakit.data.image_check import image_problems, verify_images
from llavakit.data.records import (
    RecordProblem,
    count_records,
    read_records,
    record_images,
    validate_records,
)


@dataclass
class DataSummary:
    file: str
    records: int = 0
    with_images: int = 0
    text_only: int = 0
    turns: int = 0
    problems: list[RecordProblem] = field(default_factory=list)
    """Every problem found (a record may have several): structure, images, encoding."""
    lengths: list[int] = field(default_factory=list)
    """Token lengths (image features included) when a checkpoint was given, else word counts."""
    length_unit: str = "words"
    truncated: int = 0

    @property
    def invalid_records(self) -> int:
        return count_records(self.problems)

    def percentiles(self) -> dict[str, float]:
        if not self.lengths:
            return {}
        values = np.percentile(self.lengths, [50, 90, 99, 100])
        return dict(zip(("p50", "p90", "p99", "max"), (float(v) for v in values)))

    def render(self) -> str:
        lines = [
            f"{self.file}: {self.records} records ({self.with_images} with images, "
            f"{self.text_only} text-only), {self.turns} turns",
            f"invalid records: {self.invalid_records}",
        ]
        pct = self.percentiles()
        if pct:
            lines.append(
                f"length ({self.length_unit}): " + ", ".join(f"{k} {v:.0f}" for k, v in pct.items())
            )
        if self.length_unit == "tokens":
            lines.append(f"truncated at max_length: {self.truncated}")
        lines += [f"  {p}" for p in sorted(self.problems, key=lambda p: p.index)]
        return "\n".join(lines)


def check_data(
    path: str | Path,
    image_folder: str | Path,
    checkpoint: str | Path | None = None,
    *,
    image_cache: str | Path | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> DataSummary:
    """Validate every record and decode every image; with a checkpoint, also render each record
    and measure token lengths. Counts describe the valid records; problems list the rest."""
    records = read_records(path)
    folder = Path(image_folder)
    summary = DataSummary(file=str(path), records=len(records))
    summary.problems = validate_records(records, folder, str(path))
    invalid = {p.index for p in summary.problems}
    valid = [(i, r) for i, r in enumerate(records) if i not in invalid]
    paths = [folder / name for _, record in valid for name in record_images(record)]
    unusable = verify_images(paths, image_cache, workers, progress)
    summary.problems += image_problems(valid, folder, str(path), unusable)
    invalid = {p.index for p in summary.problems}
    good = [(i, r) for i, r in valid if i not in invalid]
    for _, record in good:
        n_images = len(record_images(record))
        summary.with_images += bool(n_images)
        summary.text_only += not n_images
        summary.turns += len(record["conversations"])
    if checkpoint is None:
        summary.lengths = [
            sum(len(t["value"].split()) for t in r["conversations"]) for _, r in good
        ]
        return summary
    _measure_tokens(summary, good, folder, str(path), checkpoint)
    return summary


def _measure_tokens(summary: DataSummary, good, folder: Path, file: str, checkpoint) -> None:
    """Render each record as training would; a record that cannot be encoded is a problem."""
    from llavakit.data.dataset import Entry, LlavaDataset
    from llavakit.model.io import load_checkpoint
    from llavakit.processor import SampleError

    _, processor = load_checkpoint(checkpoint)
    dataset = LlavaDataset([Entry(r, folder, file, i) for i, r in good], processor)
    summary.length_unit = "tokens"
    for position, entry in enumerate(dataset.entries):
        try:
            sample = dataset.encode(position)
        except SampleError as error:
            reason = str(error.__cause__ or error)
            summary.problems.append(
                RecordProblem(file, entry.index, entry.record_id, "conversations", reason)
            )
            continue
        summary.lengths.append(len(sample.input_ids))
        summary.truncated += sample.truncated
