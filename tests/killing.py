"""Start a training run in a subprocess, kill -9 it in the middle of writing a checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from llavakit.config import RecipeConfig, save_recipe

HELPER = Path(__file__).parent / "train" / "killable_train.py"


def kill_during_save(
    recipe: RecipeConfig, folder: Path, step: int, processes: int = 1, port: int = 29541
) -> None:
    """Train until the save of checkpoint-`step` is half written, then SIGKILL every process."""
    folder.mkdir(parents=True, exist_ok=True)
    recipe_file, marker, log = folder / "recipe.yaml", folder / "paused", folder / "killed.log"
    save_recipe(recipe, recipe_file)
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
        launcher += ["--master_port", str(port)]
    command = [*launcher, str(HELPER), str(recipe_file), str(step), str(marker)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "w") as output:
        process = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 300
        while not marker.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                kill_all(process, marker)
                raise AssertionError(
                    f"the run ended before pausing in its save:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.1)
        kill_all(process, marker)


def kill_all(process: subprocess.Popen, marker: Path) -> None:
    """SIGKILL the launcher's process group and every training process that recorded its pid."""
    os.killpg(process.pid, signal.SIGKILL)
    for pid_file in marker.with_name(marker.name + ".pids").glob("*"):
        try:
            os.kill(int(pid_file.name), signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()
