"""`llavakit data check` decodes every image and counts every invalid record, with or without a
model; the verdicts are remembered by size and mtime."""

from __future__ import annotations

import os
import threading

import bad_data
import pytest

from llavakit.cli import main
from llavakit.data import image_check
from llavakit.data.image_check import verify_images


@pytest.fixture
def bad(tmp_path, tiny_data):
    return bad_data.write_bad_data(tmp_path, tiny_data)


def check(bad, *extra: str) -> list[str]:
    return ["data", "check", str(bad["data"]), "--image-folder", str(bad["images"]), *extra]


def assert_every_bad_record_is_named(report: str) -> None:
    for name, reason in bad_data.BAD_IMAGES.items():
        assert f"(id=bad-{name}): image: cannot load image " in report
        assert f"{name}: {reason}" in report
    assert "(id=empty-answer): conversations[1].value: empty answer" in report


def test_check_decodes_every_image_and_counts_every_invalid_record(bad, capsys):
    assert main(check(bad, "--workers", "2")) == 1
    out, err = capsys.readouterr()
    assert f"invalid records: {bad_data.SKIPPED}" in out
    assert_every_bad_record_is_named(out)
    assert "checking images" in err and "17/17" in err  # the progress bar, one tick per image


def test_check_with_a_model_counts_images_and_encoding_failures(bad, tiny_checkpoint, capsys):
    assert main(check(bad, "--model", str(tiny_checkpoint), "--no-progress")) == 1
    out = capsys.readouterr().out
    assert f"invalid records: {bad_data.SKIPPED + bad_data.FAILING}" in out
    assert_every_bad_record_is_named(out)
    assert "(id=long-question): conversations: every answer token lies beyond max_length" in out
    assert f"truncated at max_length: {bad_data.TRUNCATED}" in out


def test_verdicts_are_remembered_until_a_file_changes(bad, tmp_path, monkeypatch):
    decoded = []
    lock = threading.Lock()
    real_load = image_check.load_image

    def counting_load(path, *args, **kwargs):
        with lock:
            decoded.append(path.name)
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(image_check, "load_image", counting_load)
    images = sorted(bad["images"].iterdir())
    cache = tmp_path / "verdicts.json"
    first = verify_images(images, cache, workers=2, progress=False)
    assert sorted(path.name for path in first) == sorted(bad_data.BAD_IMAGES)
    assert len(decoded) == len(images)

    decoded.clear()
    assert verify_images(images, cache, progress=False) == first
    assert decoded == []  # a rerun decodes nothing

    fixed = bad["images"] / "truncated.png"
    fixed.write_bytes((bad["images"] / "0.png").read_bytes())
    stamp = fixed.stat()
    os.utime(fixed, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))
    again = verify_images(images, cache, progress=False)
    assert decoded == ["truncated.png"] and fixed not in again and len(again) == len(first) - 1


def test_an_unreadable_cache_is_rebuilt(bad, tmp_path):
    cache = tmp_path / "verdicts.json"
    cache.write_text('{"checker": ')
    images = sorted(bad["images"].iterdir())
    assert len(verify_images(images, cache, progress=False)) == len(bad_data.BAD_IMAGES)
    assert len(verify_images(images, cache, progress=False)) == len(bad_data.BAD_IMAGES)
