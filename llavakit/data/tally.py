"""What became of the samples a run trained on, counted where it can be seen and summed where it
is used.

A data set object lives on in each DataLoader worker process, so a count kept inside it never
reaches the trainer. Instead each batch carries its own tally (`TALLY_KEY`): the collator, which
sees every sample of the batch, writes it; the trainer takes it out of each batch it consumes and
sums; the ranks' sums are added at the end (`gather_tally`). Counts are exact: a batch a worker
prepared but the trainer never used is never counted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from llavakit.processor import IGNORE_INDEX, EncodedSample

TALLY_KEY = "sample_tally"
"""The batch entry holding the batch's SampleTally (removed before the model sees the batch)."""
EXAMPLES_KEPT = 5
"""Reasons kept per kind (failed, truncated) for logs and checkpoint metadata."""


@dataclass
class DroppedSample:
    """What the data set returns, with skip_bad_records, for a sample it could not make; the
    collator leaves it out of the batch (no other sample takes its place) and counts it."""

    reason: str


@dataclass
class SampleTally:
    """Samples trained on, failed to load (dropped), and cut at max_length, with examples."""

    samples: int = 0
    """Samples that went into a batch (a record seen in two epochs counts twice)."""
    failed: int = 0
    """Samples that could not be loaded or encoded and were dropped."""
    truncated: int = 0
    """Samples cut at max_length (trained on, without their tail)."""
    failure_examples: list[str] = field(default_factory=list)
    truncation_examples: list[str] = field(default_factory=list)

    @classmethod
    def of_batch(cls, items: Sequence[EncodedSample | DroppedSample]) -> SampleTally:
        tally = cls()
        for item in items:
            if isinstance(item, DroppedSample):
                tally.failed += 1
                _keep(tally.failure_examples, item.reason)
            else:
                tally.samples += 1
                if item.truncated:
                    tally.truncated += 1
                    _keep(tally.truncation_examples, item.truncation)
        return tally

    def add(self, other: SampleTally) -> SampleTally:
        self.samples += other.samples
        self.failed += other.failed
        self.truncated += other.truncated
        for example in other.failure_examples:
            _keep(self.failure_examples, example)
        for example in other.truncation_examples:
            _keep(self.truncation_examples, example)
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SampleTally:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def _keep(examples: list[str], example: str) -> None:
    if len(examples) < EXAMPLES_KEPT and example not in examples:
        examples.append(example)


def gather_tally(tally: SampleTally) -> SampleTally:
    """The sum of every rank's tally (this one's alone outside torch.distributed); every rank
    must call it at the same point."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return SampleTally().add(tally)
    gathered: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, json.dumps(tally.to_dict()))
    total = SampleTally()
    for document in gathered:
        total.add(SampleTally.from_dict(json.loads(document or "{}")))
    return total


class TallyingCollator:
    """Wraps a collator: drops DroppedSamples and adds the batch's SampleTally under TALLY_KEY.

    A batch whose every sample failed becomes one row that trains nothing (a pad token, label
    ignored), so every rank still takes the step in lockstep and the loss stays finite.
    """

    def __init__(self, collate: Callable[[list[EncodedSample]], dict], pad_token_id: int):
        self.collate = collate
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[EncodedSample | DroppedSample]) -> dict:
        samples = [item for item in items if not isinstance(item, DroppedSample)]
        if not samples:
            samples = [EncodedSample([self.pad_token_id], [IGNORE_INDEX])]
        batch = self.collate(samples)
        batch[TALLY_KEY] = SampleTally.of_batch(items)
        return batch
