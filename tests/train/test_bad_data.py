"""Bad records and training: refused up front with the list, or (--skip-bad-records) dropped
without substitutes and counted exactly across DataLoader workers, ranks and a resume."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import bad_data
import pytest
import tiny
import torch
from transformers import TrainerCallback

import llavakit
from llavakit.cli import main
from llavakit.config import DataSource, save_recipe
from llavakit.data import image_check
from llavakit.data.dataset import LlavaDataset, load_entries
from llavakit.data.records import DataError
from llavakit.data.tally import DroppedSample
from llavakit.model.io import build_model
from llavakit.train.run import IMAGE_CHECK_CACHE, train

EPOCHS = 2


@pytest.fixture
def bad(tmp_path, tiny_data):
    return bad_data.write_bad_data(tmp_path / "bad", tiny_data)


def bad_recipe(tiny_model_config, tiny_data, bad, out: Path, **train_fields):
    recipe = tiny.tiny_recipe(tiny_model_config, tiny_data, out, "instruct", **train_fields)
    recipe.data.train = [DataSource(path=str(bad["data"]))]
    recipe.data.image_folder = str(bad["images"])
    return recipe


def metadata(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())["metadata"]


def counts(meta: dict) -> tuple[int, int, int, int]:
    keys = ("skipped_records", "trained_samples", "failed_samples", "truncated_samples")
    return tuple(meta[key] for key in keys)


def test_train_refuses_every_bad_record_up_front(tmp_path, tiny_model_config, tiny_data, bad):
    out = tmp_path / "out"
    with pytest.raises(DataError) as caught:
        train(bad_recipe(tiny_model_config, tiny_data, bad, out, max_steps=1))
    message = str(caught.value)
    assert message.startswith(f"{bad_data.SKIPPED} of 21 record(s) are invalid:")
    for name, reason in bad_data.BAD_IMAGES.items():
        assert (
            f"(id=bad-{name}): image: cannot load image {bad['images'] / name}: {reason}" in message
        )
    assert "(id=empty-answer): conversations[1].value: empty answer" in message
    assert message.endswith("leave them out with --skip-bad-records (data.skip_bad_records=true).")
    assert not list(out.glob("checkpoint-*")) and not (out / "config.json").exists()


def test_skipped_dropped_and_truncated_samples_are_counted_across_workers(
    tmp_path, tiny_model_config, tiny_data, bad, caplog
):
    recipe = bad_recipe(
        tiny_model_config, tiny_data, bad, tmp_path / "out", epochs=EPOCHS, per_device_batch_size=4
    )
    recipe.data.skip_bad_records = True
    recipe.data.num_workers = 2  # the samples are made in two worker processes
    with caplog.at_level(logging.INFO, logger="llavakit"):
        folder = train(recipe)
    meta = metadata(folder)
    # The failing record is dropped from its batch, not replaced: every other record is trained
    # exactly once per epoch.
    assert counts(meta) == (
        bad_data.SKIPPED,
        EPOCHS * (bad_data.GOOD + bad_data.TRUNCATED),
        EPOCHS * bad_data.FAILING,
        EPOCHS * bad_data.TRUNCATED,
    )
    problems = meta["data_problems"]
    assert len(problems["skipped"]) == bad_data.SKIPPED
    assert any("(id=bad-empty.png): image:" in line for line in problems["skipped"])
    [failed] = problems["failed"]
    assert "(id=long-question): every answer token lies beyond max_length=128" in failed
    assert sorted(problems["truncated"]) == [
        f"{bad['data']} record #{index} (id=long-answer{i}): "
        "164 tokens (images included) cut to max_length=128"
        for i, index in enumerate((18, 19))
    ]
    assert (
        f"data: {bad_data.SKIPPED} record(s) skipped up front, 30 samples trained, 2 failed to "
        "load (dropped), 4 truncated at max_length" in caplog.text
    )


def test_a_sample_that_fails_when_loaded_is_dropped_and_a_truncated_one_is_logged(
    tmp_path, tiny_model_config, tiny_data, bad, caplog
):
    recipe = bad_recipe(tiny_model_config, tiny_data, bad, tmp_path / "out")
    recipe.data.skip_bad_records = True
    entries, report = load_entries(recipe.data, progress=False)
    assert report.skipped_records == bad_data.SKIPPED
    _, processor = build_model(tiny_model_config)
    dataset = LlavaDataset(entries, processor, skip_bad_records=True)
    ids = [entry.record_id for entry in entries]
    with caplog.at_level(logging.WARNING, logger="llavakit"):
        dropped = dataset[ids.index("long-question")]
        truncated = dataset[ids.index("long-answer0")]
    assert isinstance(dropped, DroppedSample)
    assert truncated.truncated and len(truncated.input_ids) == 128
    assert "truncated sample: " in caplog.text and "(id=long-answer0): 164 tokens" in caplog.text
    assert "dropping sample (skip_bad_records=true): " in caplog.text


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


def test_counts_survive_a_resume(tmp_path, tiny_model_config, tiny_data, bad):
    def run(out, callbacks=None):
        recipe = bad_recipe(
            tiny_model_config,
            tiny_data,
            bad,
            out,
            max_steps=6,
            save_steps=3,
            per_device_batch_size=4,
        )
        recipe.data.skip_bad_records = True
        return train(recipe, callbacks=callbacks)

    straight = metadata(run(tmp_path / "straight"))
    interrupted = tmp_path / "interrupted"
    run(interrupted, callbacks=[StopAt(3)])
    assert (interrupted / "checkpoint-3").is_dir()
    resumed = metadata(run(interrupted))
    assert counts(resumed) == counts(straight)
    assert straight["trained_samples"] + straight["failed_samples"] == 6 * 4


def test_cli_flags_anywhere_and_a_rerun_decodes_no_image(
    tmp_path, tiny_model_config, tiny_data, bad, monkeypatch
):
    decoded = []
    lock = threading.Lock()
    real_load = image_check.load_image

    def counting_load(path, *args, **kwargs):
        with lock:
            decoded.append(path)
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(image_check, "load_image", counting_load)
    out = tmp_path / "out"
    path = tmp_path / "recipe.yaml"
    save_recipe(bad_recipe(tiny_model_config, tiny_data, bad, out, max_steps=1), path)
    assert main(["train", str(path), "--skip-bad-records", "train.max_steps=1"]) == 0
    assert len(decoded) == 17 and (out / IMAGE_CHECK_CACHE).is_file()
    assert counts(metadata(out))[0] == bad_data.SKIPPED

    decoded.clear()
    assert main(["train", str(path), "train.max_steps=2", "--skip-bad-records"]) == 0
    assert decoded == []  # every verdict came from the cache
    assert [point["step"] for point in json.loads((out / "loss_history.json").read_text())] == [
        1,
        2,
    ]


def test_two_ranks_with_workers_count_every_sample_once(
    tmp_path, tiny_model_config, tiny_data, bad
):
    recipe = bad_recipe(tiny_model_config, tiny_data, bad, tmp_path / "out", epochs=1)
    recipe.train.per_device_batch_size = 4  # two ranks x 4 = the single process's 8
    recipe.data.num_workers = 1
    path = tmp_path / "recipe.yaml"
    save_recipe(recipe, path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_port", "29541", "-m", "llavakit", "train", str(path)]
    command += ["--skip-bad-records", "train.logging_steps=1"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert counts(metadata(tmp_path / "out")) == (
        bad_data.SKIPPED,
        bad_data.GOOD + bad_data.TRUNCATED,
        bad_data.FAILING,
        bad_data.TRUNCATED,
    )


@pytest.mark.parametrize("trained_logits_only", [True, False])
def test_a_batch_whose_every_sample_failed_trains_nothing(
    tmp_path, tiny_model_config, tiny_data, bad, trained_logits_only
):
    records = [json.loads(line) for line in bad["data"].read_text().splitlines()]
    chosen = [r for r in records if r["id"] in ("good0", "long-question")]
    (tmp_path / "two.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chosen))
    recipe = bad_recipe(
        tiny_model_config,
        tiny_data,
        bad,
        tmp_path / "out",
        per_device_batch_size=1,
        trained_logits_only=trained_logits_only,
    )
    recipe.data.train = [DataSource(path=str(tmp_path / "two.jsonl"))]
    recipe.data.skip_bad_records = True
    folder = train(recipe)
    assert counts(metadata(folder)) == (0, 1, 1, 0)
    history = json.loads((folder / "loss_history.json").read_text())
    assert len(history) == 2 and all(math.isfinite(point["loss"]) for point in history)
    model, _ = llavakit.load(folder)
    assert all(torch.isfinite(parameter).all() for parameter in model.parameters())
