"""Trainer callbacks llavakit adds: a wall-clock budget for a stage."""

from __future__ import annotations

import time

from transformers import TrainerCallback


class TimeBudget(TrainerCallback):
    """Stop training once `seconds` of wall time have passed (checked after each step).

    Used by the demo so that a slow or busy machine still finishes in its time budget; the
    checkpoint written afterwards is the model as trained so far.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start: float | None = None
        self.stopped = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.start is not None and time.perf_counter() - self.start > self.seconds:
            control.should_training_stop = True
            self.stopped = True
