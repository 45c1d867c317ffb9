"""BatchSizes: every call counted, memory bounded, recent calls readable by number."""

import pytest

from llavakit.infer.batch_sizes import BatchSizes


def test_memory_stays_bounded_while_the_summary_covers_every_call():
    sizes = BatchSizes(recent=4)
    for n in range(1, 10_001):
        sizes.append(n % 5 + 1)
    assert len(sizes) == 10_000
    assert len(sizes._recent) == 4
    summary = sizes.summary()
    assert summary["batches"] == 10_000 and summary["max_batch_size_seen"] == 5
    assert sum(summary["batch_size_histogram"].values()) == 10_000
    assert sizes[-1] == 10_000 % 5 + 1
    assert sizes[9_998:] == [9_999 % 5 + 1, 10_000 % 5 + 1]
    with pytest.raises(IndexError, match="older"):
        sizes[0]
