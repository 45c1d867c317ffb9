"""Writing files so that a kill, a crash or a power cut never leaves half of one behind.

The one way llavakit writes a file atomically: the content goes to a temporary name unique to the
writer, is flushed to disk (fsync), and is renamed over the target in one step, so readers, and
other processes writing the same file at once, see the old contents or the new, never a mixture.
`write_atomic` takes any writer (safetensors shards, say); `write_text_atomic` is text. Whole
checkpoint folders are made whole by renaming the folder (`fsync_folder` flushes the rename).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Have `write(temporary)` fill a fresh file beside `path`, fsync it, then rename it into place.

    `write` must create the temporary file itself (it does not exist yet). On any failure the
    temporary file is removed and the old `path`, if any, is left as it was.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(temporary)
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str, make_parents: bool = False) -> Path:
    """Write `text` (UTF-8) to `path` atomically (see `write_atomic`).

    make_parents: create missing parent folders first.
    """
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(temporary: Path) -> None:
        # O_EXCL: never another writer's file; 0o666 under the umask, as open() would create it.
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(text)

    return write_atomic(path, write)


def fsync_folder(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename into it) to disk."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
