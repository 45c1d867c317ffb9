"""Writing files so that a kill, a crash or a power cut never leaves half of one behind.

A file is written under a temporary name unique to the writer, flushed to disk, and renamed over
the target in one step: readers, and other processes writing the same file at once, see the old
contents or the new, never a mixture. Used for small JSON records (caches, indexes, manifests);
weights are written through safetensors and made whole by renaming their folder.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` through a unique temporary file, fsynced, then renamed into place."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    # O_EXCL: never another writer's file; 0o666 under the umask, as open() would create it.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def fsync_folder(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename into it) to disk."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
