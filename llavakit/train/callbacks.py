"""A wall-clock budget for a training stage, and the learning-rate schedule that follows it.

transformers plans its schedule for `max_steps` (or the epochs' steps). A stage stopped early by a
wall-clock cap would end with its cosine barely begun: the learning rate still near its peak, the
last updates as noisy as the first. So a budgeted stage's schedule follows *progress*, the larger
of the share of steps done and the share of the budget spent: a run cut short by the clock still
warms up at its start and ends on a fully decayed learning rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from torch.optim.lr_scheduler import LambdaLR
from transformers import TrainerCallback

SCHEDULE_SHAPES = ("cosine", "linear", "constant", "constant_with_warmup")
"""Schedules a budgeted stage supports (the same names as transformers' `lr_scheduler_type`)."""


class TimeBudget(TrainerCallback):
    """Stop training once `seconds` of training time have passed (checked after each step).

    Time that other callbacks spend on something else than training (an evaluation run during
    training, say) does not count: each callback in `paused_by` reports it as `paused_seconds`.
    Used by `train.time_budget_s`, so that a slow or busy machine still finishes in its budget;
    the checkpoint written afterwards is the model as trained so far.
    """

    def __init__(self, seconds: float, paused_by: Sequence[object] = ()):
        if seconds <= 0:
            raise ValueError(f"a time budget must be positive, got {seconds} s")
        self.seconds = seconds
        self.paused_by = tuple(paused_by)
        self.start: float | None = None
        self.stopped = False

    def elapsed(self) -> float:
        """Training seconds so far (0 before training starts)."""
        if self.start is None:
            return 0.0
        paused = sum(getattr(callback, "paused_seconds", 0.0) for callback in self.paused_by)
        return time.perf_counter() - self.start - paused

    def fraction_spent(self) -> float:
        return min(1.0, self.elapsed() / self.seconds)

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.elapsed() > self.seconds:
            control.should_training_stop = True
            self.stopped = True


def budgeted_schedule(
    optimizer, shape: str, warmup: float, total_steps: int, budget: TimeBudget
) -> LambdaLR:
    """`shape` (cosine, linear, constant, constant_with_warmup) over the progress of a stage.

    Progress = max(steps done / total_steps, share of the time budget spent). `warmup` is a
    share of that progress (< 1) or a number of steps (>= 1), as transformers reads it.
    """
    if shape not in SCHEDULE_SHAPES:
        raise ValueError(
            f"train.lr_scheduler {shape!r} cannot follow a time budget; choose one of "
            f"{', '.join(SCHEDULE_SHAPES)} or drop train.time_budget_s"
        )
    warmup_share = warmup if warmup < 1 else warmup / max(1, total_steps)
    warmup_share = 0.0 if shape == "constant" else warmup_share

    def factor(step: int) -> float:
        progress = max(step / max(1, total_steps), budget.fraction_spent())
        if progress < warmup_share:
            return progress / warmup_share
        if shape in ("constant", "constant_with_warmup"):
            return 1.0
        rest = min(1.0, (progress - warmup_share) / max(1e-9, 1.0 - warmup_share))
        if shape == "linear":
            return 1.0 - rest
        return 0.5 * (1.0 + math.cos(math.pi * rest))

    return LambdaLR(optimizer, factor)
