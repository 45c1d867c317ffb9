"""`llavakit data check`: what a data file holds and what is wrong with it, before training."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llavakit.data.records import RecordProblem, read_records, record_images, validate_records


@dataclass
class DataSummary:
    file: str
    records: int = 0
    with_images: int = 0
    text_only: int = 0
    turns: int = 0
    problems: list[RecordProblem] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    """Token lengths (image features included) when a checkpoint was given, else word counts."""
    length_unit: str = "words"
    truncated: int = 0
    unencodable: list[str] = field(default_factory=list)

    def percentiles(self) -> dict[str, float]:
        if not self.lengths:
            return {}
        values = np.percentile(self.lengths, [50, 90, 99, 100])
        return dict(zip(("p50", "p90", "p99", "max"), (float(v) for v in values)))

    def render(self) -> str:
        bad = len({p.index for p in self.problems})
        lines = [
            f"{self.file}: {self.records} records ({self.with_images} with images, "
            f"{self.text_only} text-only), {self.turns} turns",
            f"invalid records: {bad}",
        ]
        pct = self.percentiles()
        if pct:
            lines.append(
                f"length ({self.length_unit}): " + ", ".join(f"{k} {v:.0f}" for k, v in pct.items())
            )
        if self.length_unit == "tokens":
            lines.append(f"truncated at max_length: {self.truncated}")
        lines += [f"  {p}" for p in self.problems]
        lines += [f"  {u}" for u in self.unencodable]
        return "\n".join(lines)


def check_data(
    path: str | Path, image_folder: str | Path, checkpoint: str | Path | None = None
) -> DataSummary:
    """Validate every record; with a checkpoint, also render each one and measure token lengths."""
    records = read_records(path)
    folder = Path(image_folder)
    summary = DataSummary(file=str(path), records=len(records))
    summary.problems = validate_records(records, folder, str(path))
    bad = {p.index for p in summary.problems}
    good = [(i, r) for i, r in enumerate(records) if i not in bad]
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
    from llavakit.data.dataset import Entry, LlavaDataset
    from llavakit.model.io import load_checkpoint
    from llavakit.processor import SampleError

    _, processor = load_checkpoint(checkpoint)
    dataset = LlavaDataset([Entry(r, folder, str(path), i) for i, r in good], processor)
    summary.length_unit = "tokens"
    for index in range(len(dataset)):
        try:
            sample = dataset.encode(index)
        except SampleError as error:
            summary.unencodable.append(str(error))
            continue
        summary.lengths.append(len(sample.input_ids))
        summary.truncated += sample.truncated
    return summary
