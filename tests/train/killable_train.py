"""Run one training stage and stop dead in the middle of writing checkpoint-STEP.

Used by the kill -9 tests: `python killable_train.py RECIPE.yaml STEP MARKER` (also under
torchrun). The first torch.save into the staged checkpoint-STEP writes half of its bytes, creates
MARKER and then waits to be killed, so the kill lands at a known point inside the save. Each
process records its pid in MARKER.pids/ first.
"""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

import torch

from llavakit.config import load_recipe
from llavakit.train.run import train


def pause_inside_save(step: int, marker: Path) -> None:
    real_save = torch.save

    def save(obj, target, *args, **kwargs):
        staged = f".incomplete/checkpoint-{step}/"
        if not isinstance(target, (str, Path)) or staged not in str(target):
            return real_save(obj, target, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        Path(target).write_bytes(data[: len(data) // 2])
        marker.touch()
        while True:
            time.sleep(1)

    torch.save = save


if __name__ == "__main__":
    recipe_file, step, marker = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    # torchrun starts its workers in sessions of their own: the test kills each one by pid.
    pids = marker.with_name(marker.name + ".pids")
    pids.mkdir(exist_ok=True)
    (pids / str(os.getpid())).touch()
    pause_inside_save(step, marker)
    train(load_recipe(recipe_file))
