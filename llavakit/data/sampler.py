"""Modality- and length-grouped sampling (LLaVA-1.5's group_by_modality_length).

Image samples and text-only samples never share a batch (a batch of text-only samples skips the
vision tower entirely), and within shuffled mega-batches samples are sorted by length so padding
is small. Reported ~25% faster with no quality change.
"""

from __future__ import annotations

import random

from torch.utils.data import Sampler


def grouped_indices(lengths: list[int], megabatch_size: int, seed: int) -> list[int]:
    """An epoch's order: lengths > 0 are image samples, < 0 text-only (|length| = tokens)."""
    if megabatch_size < 1:
        raise ValueError("megabatch_size must be >= 1")
    rng = random.Random(seed)
    megabatches: list[list[int]] = []
    leftovers: list[int] = []
    for modality in (
        [i for i, n in enumerate(lengths) if n > 0],
        [i for i, n in enumerate(lengths) if n <= 0],
    ):
        rng.shuffle(modality)
        for start in range(0, len(modality), megabatch_size):
            chunk = sorted(modality[start : start + megabatch_size], key=lambda i: -abs(lengths[i]))
            (megabatches if len(chunk) == megabatch_size else leftovers).append(chunk)
    rng.shuffle(megabatches)
    # Partial mega-batches of both modalities go last, so only the final batches may mix.
    tail = sorted((i for chunk in leftovers for i in chunk), key=lambda i: -abs(lengths[i]))
    return [i for chunk in megabatches for i in chunk] + tail


class ModalityLengthSampler(Sampler[int]):
    """Yields grouped_indices; a new order each epoch (set_epoch), identical across ranks."""

    def __init__(self, lengths: list[int], batch_size: int, world_size: int = 1, seed: int = 0):
        self.lengths = lengths
        self.megabatch_size = batch_size * world_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        return iter(grouped_indices(self.lengths, self.megabatch_size, self.seed + self.epoch))
