"""The sizes of an engine's generate calls, kept in bounded memory for a server that runs for weeks.

A histogram, the count and the largest size cover every call; only the most recent calls are kept
in order (tests and benchmarks look at the last few). `/metrics` reads `summary()`, which costs
the histogram's size, not the number of calls.
"""

from __future__ import annotations

from collections import Counter, deque

RECENT = 1024
"""Most recent batch sizes kept in order."""


class BatchSizes:
    """Append-only record of batch sizes; indexable by call number for the recent ones."""

    def __init__(self, recent: int = RECENT):
        self.histogram: Counter[int] = Counter()
        self.largest = 0
        self._count = 0
        self._recent: deque[int] = deque(maxlen=recent)

    def append(self, size: int) -> None:
        self.histogram[size] += 1
        self.largest = max(self.largest, size)
        self._count += 1
        self._recent.append(size)

    def __len__(self) -> int:
        """Calls so far (all of them, not only those still kept in order)."""
        return self._count

    def __getitem__(self, index: int | slice) -> int | list[int]:
        """The size of call `index` (negative from the end); slices give lists. Only recent
        calls are kept: asking for an older one is an IndexError."""
        if isinstance(index, slice):
            return [self._size(i) for i in range(*index.indices(self._count))]
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError(f"batch {index} out of range ({self._count} so far)")
        return self._size(index)

    def _size(self, index: int) -> int:
        first_kept = self._count - len(self._recent)
        if index < first_kept:
            raise IndexError(f"batch {index} is older than the {len(self._recent)} kept in order")
        return self._recent[index - first_kept]

    def summary(self) -> dict:
        """batches, batch_size_histogram (size as text -> calls) and max_batch_size_seen."""
        histogram = dict(self.histogram)
        return {
            "batches": self._count,
            "batch_size_histogram": {str(k): histogram[k] for k in sorted(histogram)},
            "max_batch_size_seen": self.largest,
        }
