"""Which training precision pays off on the CPU at hand.

bf16 autocast is about twice as fast as float32 for a tiny model's training step on a CPU with
native bf16 matrix units (AVX-512 BF16, AMX, recent Arm cores), and five to eight times *slower*
on one without them, where torch emulates it (an AVX2-only AMD EPYC: a 512x512 matmul 60x
slower, every demo training stage 0.13-0.21x, bench/demo_throughput.py). Flags and capability strings differ across vendors and builds, so
the question is answered the way that cannot be wrong: time one matmul both ways.
"""

from __future__ import annotations

import functools
import time

PRECISIONS = ("fp32", "bf16")
"""Precisions of the CPU training loops (stage 0 and the demo's stages 1-2)."""
AUTO = "auto"
"""Choose bf16 where the CPU runs it natively (`fast_cpu_bf16`), float32 elsewhere."""
BF16_MIN_SPEEDUP = 1.25
"""bf16 is chosen only when its matmul is at least this much faster than float32's: native
support measured about 5x, emulation about 1/60x, so timing noise cannot flip the choice."""


@functools.cache
def fast_cpu_bf16(size: int = 256, repeats: int = 3) -> bool:
    """True when a bf16 matmul on this CPU beats float32 by `BF16_MIN_SPEEDUP` (one thread).

    Takes a few milliseconds where bf16 is native and well under a second where it is
    emulated; the answer is cached for the process."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seconds = {}
        for dtype in (torch.float32, torch.bfloat16):
            a = torch.randn(size, size).to(dtype)  # (size, size)
            a @ a  # warm-up: first-call dispatch and allocation
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                a @ a
                best = min(best, time.perf_counter() - start)
            seconds[dtype] = best
    finally:
        torch.set_num_threads(threads)
    return seconds[torch.bfloat16] * BF16_MIN_SPEEDUP <= seconds[torch.float32]


def resolve_precision(precision: str) -> str:
    """`precision` itself, or for "auto" the faster of bf16 and fp32 on this CPU."""
    if precision == AUTO:
        return "bf16" if fast_cpu_bf16() else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {', '.join((AUTO, *PRECISIONS))}, got {precision!r}"
        )
    return precision
