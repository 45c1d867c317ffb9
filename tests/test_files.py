"""write_text_atomic: the new text replaces the old whole, or the old stays; nothing left over."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from llavakit.files import write_text_atomic


def test_replaces_the_file_whole_with_the_mode_open_would_give(tmp_path):
    path = tmp_path / "index.json"
    path.write_text("old")
    expected_mode = stat.S_IMODE(path.stat().st_mode)  # what open() makes under this umask
    path.unlink()
    write_text_atomic(path, "first")
    assert stat.S_IMODE(path.stat().st_mode) == expected_mode
    write_text_atomic(path, "second ünïcode")
    assert path.read_text(encoding="utf-8") == "second ünïcode"
    assert os.listdir(tmp_path) == ["index.json"]


def test_a_failed_write_keeps_the_old_text_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "manifest.json"
    write_text_atomic(path, "complete")
    with pytest.raises(TypeError):
        write_text_atomic(path, b"not text")  # fails inside the write, after the file was made
    assert path.read_text() == "complete"
    assert os.listdir(tmp_path) == ["manifest.json"]


def test_concurrent_writers_never_leave_a_mixture(tmp_path):
    path = tmp_path / "cache.json"
    texts = [str(n) * 20_000 for n in range(8)]
    threads = [threading.Thread(target=write_text_atomic, args=(path, t)) for t in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert path.read_text() in texts
    assert os.listdir(tmp_path) == ["cache.json"]
