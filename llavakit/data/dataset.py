"""Records -> training samples, lazily: images are read and conversations rendered on access.

Every record is checked before training (structure, image files decoded: `load_entries`), so a
sample that still fails here is rare (a file changed mid-run, every answer past max_length). With
skip_bad_records it is dropped from its batch, never replaced by another record, and counted
through the batch's tally (llavakit.data.tally), as are samples cut at max_length.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from llavakit.config import DataConfig
from llavakit.conversation import messages_from_llava
from llavakit.data.feature_cache import FeatureCache, cached_sample, content_hash
from llavakit.data.image_check import image_problems, verify_images
from llavakit.data.records import (
    DataError,
    RecordProblem,
    count_records,
    read_records,
    record_images,
    validate_records,
)
from llavakit.data.tally import EXAMPLES_KEPT, DroppedSample
from llavakit.image import load_image
from llavakit.processor import EncodedSample, LlavaProcessor, SampleError

log = logging.getLogger(__name__)
LOGGED_PER_PROCESS = 10
"""Truncated or dropped samples each process names in the log; the rest are only counted."""


@dataclass
class Entry:
    """One record with where it came from."""

    record: dict[str, Any]
    image_folder: Path
    file: str
    index: int

    @property
    def record_id(self) -> str:
        return str(self.record.get("id", f"#{self.index}"))


@dataclass
class LoadReport:
    """What building a training set found."""

    files: dict[str, int] = field(default_factory=dict)
    """Records used per file (after weighting)."""
    skipped: list[RecordProblem] = field(default_factory=list)
    """Problems of the records left out (skip_bad_records); a record may have several."""

    @property
    def skipped_records(self) -> int:
        return count_records(self.skipped)


def load_entries(
    config: DataConfig,
    seed: int = 0,
    image_cache: str | Path | None = None,
    progress: bool = True,
) -> tuple[list[Entry], LoadReport]:
    """Read every source, validate every record, decode every image, apply mixture weights.

    Images are decoded up front (`image_check.verify_images`, verdicts remembered in
    `image_cache`). Invalid records abort with a DataError listing them, unless
    `skip_bad_records` is set: then they are left out and listed in the report.
    """
    if not config.train:
        raise ValueError("data.train lists no data files")
    sources = []
    for source in config.train:
        folder = Path(source.image_folder or config.image_folder)
        records = read_records(source.path)
        problems = validate_records(records, folder, source.path)
        invalid = {p.index for p in problems}
        valid = [(i, r) for i, r in enumerate(records) if i not in invalid]
        sources.append((source, folder, records, valid, problems))
    paths = [
        folder / name
        for _, folder, _, valid, _ in sources
        for _, record in valid
        for name in record_images(record)
    ]
    unusable = verify_images(paths, image_cache, progress=progress)
    rng = random.Random(seed)
    entries: list[Entry] = []
    report = LoadReport()
    total = 0
    for source, folder, records, valid, problems in sources:
        problems = sorted(
            problems + image_problems(valid, folder, source.path, unusable),
            key=lambda problem: problem.index,
        )
        total += len(records)
        invalid = {p.index for p in problems}
        good = [Entry(r, folder, source.path, i) for i, r in valid if i not in invalid]
        chosen = _weighted(good, source.weight, rng)
        report.files[source.path] = len(chosen)
        report.skipped += problems
        entries += chosen
    if report.skipped and not config.skip_bad_records:
        hint = "Fix them, or leave them out with --skip-bad-records (data.skip_bad_records=true)."
        raise DataError(report.skipped, total, hint)
    if report.skipped:
        log.warning(
            "skipping %d invalid record(s) of %d (skip_bad_records=true), e.g.:\n  %s",
            report.skipped_records,
            total,
            "\n  ".join(str(p) for p in report.skipped[:EXAMPLES_KEPT]),
        )
    return entries, report


def _weighted(entries: list[Entry], weight: float, rng: random.Random) -> list[Entry]:
    """weight 1 = each once; 2.5 = each twice plus a random half of them again; 0.3 = a random 30%."""
    if weight < 0:
        raise ValueError(f"mixture weight must be >= 0, got {weight}")
    whole, fraction = int(weight), weight - int(weight)
    chosen = entries * whole
    if fraction:
        chosen += rng.sample(entries, round(fraction * len(entries)))
    return chosen


class LlavaDataset(Dataset):
    """Renders a record on access; a sample that cannot be made is an error, or, with
    `skip_bad_records`, a DroppedSample that its batch leaves out (see the module docstring).

    With a `feature_cache` (a filled FeatureCache), samples carry the images' cached tower
    features (FeatureSample.vision_features) instead of pixels.
    """

    def __init__(
        self,
        entries: list[Entry],
        processor: LlavaProcessor,
        max_length: int | None = None,
        skip_bad_records: bool = False,
        feature_cache: FeatureCache | None = None,
    ):
        self.entries = entries
        self.processor = processor
        self.max_length = max_length
        self.skip_bad_records = skip_bad_records
        self.feature_cache = feature_cache
        self._logged = 0  # per process: each DataLoader worker has its own copy

    def __len__(self) -> int:
        return len(self.entries)

    def encode(self, index: int) -> EncodedSample:
        entry = self.entries[index]
        try:
            messages = messages_from_llava(entry.record["conversations"])
            paths = [entry.image_folder / name for name in record_images(entry.record)]
            if self.feature_cache is None:
                images = [load_image(path) for path in paths]
                return self.processor.encode(messages, images, max_length=self.max_length)
            # Features and image sizes come from the cache: no image is decoded here.
            cached = [self.feature_cache.load(content_hash(path.read_bytes())) for path in paths]
            sizes = [size for _, size in cached]
            sample = self.processor.encode_text(messages, sizes, max_length=self.max_length)
            return cached_sample(sample, [features for features, _ in cached])
        except (SampleError, ValueError, OSError) as error:
            raise SampleError(
                f"{entry.file} record #{entry.index} (id={entry.record_id}): {error}"
            ) from error

    def __getitem__(self, index: int) -> EncodedSample | DroppedSample:
        try:
            sample = self.encode(index)
        except SampleError as error:
            if not self.skip_bad_records:
                raise
            self._log("dropping sample (skip_bad_records=true): %s", error)
            return DroppedSample(str(error))
        if sample.truncated:
            entry = self.entries[index]
            where = f"{entry.file} record #{entry.index} (id={entry.record_id})"
            sample.truncation = f"{where}: {sample.truncation}"
            self._log("truncated sample: %s; the tokens past it are not trained", sample.truncation)
        return sample

    def _log(self, message: str, detail: object) -> None:
        self._logged += 1
        if self._logged <= LOGGED_PER_PROCESS:
            log.warning(message, detail)
        if self._logged == LOGGED_PER_PROCESS:
            log.warning("further truncated or dropped samples are counted, not logged")

    def lengths(self) -> list[int]:
        """Approximate token lengths, negative for text-only samples (modality grouping)."""
        per_image = self.processor.image_tokens.fewest
        out = []
        for entry in self.entries:
            words = sum(len(t["value"].split()) for t in entry.record["conversations"])
            n_images = len(record_images(entry.record))
            out.append(words + per_image * n_images if n_images else -max(words, 1))
        return out
