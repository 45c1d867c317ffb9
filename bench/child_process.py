"""One benchmark configuration per child process: its peak memory and timings are its own.

A bench script re-runs itself with `--run NAME ...`; the child prints one `RESULT {json}` line
(`report`), and the parent collects it (`run_child`), stopping with the child's stderr if it
failed.
"""

from __future__ import annotations

import json
import subprocess
import sys

PREFIX = "RESULT "


def report(result: dict) -> None:
    """Child side: print the configuration's result for the parent."""
    print(PREFIX + json.dumps(result))


def run_child(script: str, name: str, arguments: list[str]) -> dict:
    """Parent side: run `script --run name *arguments` and return its reported result."""
    command = [sys.executable, script, "--run", name, *arguments]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(PREFIX)]
    if done.returncode or not lines:
        sys.exit(f"{name} failed:\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len(PREFIX) :])
