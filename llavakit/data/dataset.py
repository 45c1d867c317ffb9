"""Records -> training samples, lazily: images are read and conversations rendered on access."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from llavakit.config import DataConfig
from llavakit.conversation import messages_from_llava
from llavakit.data.feature_cache import FeatureCache, FeatureSample, cached_sample, content_hash
from llavakit.data.packing import vision_inputs
from llavakit.data.records import (
    DataError,
    RecordProblem,
    read_records,
    record_images,
    validate_records,
)
from llavakit.image import load_image
from llavakit.processor import EncodedSample, LlavaProcessor, SampleError

log = logging.getLogger(__name__)


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


def load_entries(config: DataConfig, seed: int = 0) -> tuple[list[Entry], LoadReport]:
    """Read every source, validate every record, apply mixture weights.

    Invalid records abort with a DataError listing them, unless `skip_bad_records` is set, in
    which case they are left out and counted in the report.
    """
    if not config.train:
        raise ValueError("data.train lists no data files")
    rng = random.Random(seed)
    entries: list[Entry] = []
    report = LoadReport()
    problems: list[RecordProblem] = []
    total = 0
    for source in config.train:
        folder = Path(source.image_folder or config.image_folder)
        records = read_records(source.path)
        total += len(records)
        bad = validate_records(records, folder, source.path)
        problems += bad
        bad_indices = {p.index for p in bad}
        good = [
            Entry(r, folder, source.path, i) for i, r in enumerate(records) if i not in bad_indices
        ]
        chosen = _weighted(good, source.weight, rng)
        report.files[source.path] = len(chosen)
        entries += chosen
    if problems and not config.skip_bad_records:
        raise DataError(problems, total)
    report.skipped = problems
    if problems:
        log.warning(
            "skipped %d invalid record(s) (skip_bad_records=true)",
            len({(p.file, p.index) for p in problems}),
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
    """Renders a record on access; reports (and optionally skips) samples that cannot be encoded.

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
        self.n_failed = 0

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

    def __getitem__(self, index: int) -> EncodedSample:
        for attempt in range(len(self.entries)):
            try:
                return self.encode((index + attempt) % len(self.entries))
            except SampleError as error:
                if not self.skip_bad_records:
                    raise
                self.n_failed += 1
                log.warning("skipping sample: %s", error)
        raise SampleError("no sample in the data set can be encoded")

    def lengths(self) -> list[int]:
        """Approximate token lengths, negative for text-only samples (modality grouping)."""
        per_image = self.processor.geometry.features_per_crop
        out = []
        for entry in self.entries:
            words = sum(len(t["value"].split()) for t in entry.record["conversations"])
            n_images = len(record_images(entry.record))
            out.append(words + per_image * n_images if n_images else -max(words, 1))
        return out


class Collator:
    """Pads EncodedSamples into a right-padded training batch."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, samples: list[EncodedSample]):
        from llavakit.processor import collate_samples

        batch = collate_samples(samples, self.pad_token_id, padding_side="right")
        if any(isinstance(s, FeatureSample) for s in samples):
            batch.update(vision_inputs(samples))
        return batch
