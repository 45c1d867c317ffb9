"""Clearing a demo step's outputs before it runs again.

The data generators resume from the files and journals they find, which is right after a crash
but wrong when the demo reruns a step because its inputs changed (a new world, a new captioner):
such a step deletes what it is about to write, so nothing stale is carried over.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def remove(*paths: Path) -> None:
    """Delete these files or folders if they exist."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
