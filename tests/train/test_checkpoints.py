"""Choosing the checkpoint to resume from, one-line errors for damaged ones, QLoRA and DeepSpeed
configuration checks."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import tiny
import torch

import llavakit
from llavakit.config import ConfigError, LoraSettings, load_recipe
from llavakit.model.io import CheckpointError, build_model
from llavakit.train import checkpoints
from llavakit.train.recipes import recipe_path
from llavakit.train.run import packaged_path, train
from llavakit.train.sharding import deepspeed_config_for
from llavakit.train.stages import check_quantised_training


def fake_checkpoint(folder: Path, step: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"0" * 100)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    checkpoints.seal(folder)
    return folder


def test_newest_complete_checkpoint_names_every_one_skipped(tmp_path):
    fake_checkpoint(tmp_path / "checkpoint-2", 2)
    fake_checkpoint(tmp_path / "checkpoint-10", 10)
    truncated = fake_checkpoint(tmp_path / "checkpoint-12", 12)
    (truncated / "trainer_state.json").write_text('{"global_step": 12, "log_hi')
    shrunk = fake_checkpoint(tmp_path / "checkpoint-14", 14)
    (shrunk / "model.safetensors").write_bytes(b"0" * 40)
    unnamed = tmp_path / "checkpoint-16"
    unnamed.mkdir()
    (tmp_path / ".incomplete" / "checkpoint-18").mkdir(parents=True)
    newest, skipped = checkpoints.newest_complete(tmp_path)
    assert newest == tmp_path / "checkpoint-10"
    assert skipped == [
        f"{tmp_path}/.incomplete/checkpoint-18: an interrupted save, never renamed into place",
        f"{unnamed}/trainer_state.json does not exist (the save did not finish)",
        f"{shrunk}/model.safetensors is 40 bytes, 100 were written",
        f"{truncated}/trainer_state.json: not valid JSON (Unterminated string starting at: "
        "line 1 column 21 (char 20))",
    ]
    assert all("\n" not in line for line in skipped)


def test_damaged_checkpoints_are_skipped_by_name_and_unrecorded_damage_is_one_line(
    tmp_path, tiny_model_config, tiny_data, caplog
):
    recipe = tiny.tiny_recipe(
        tiny_model_config, tiny_data, tmp_path / "run", "align", max_steps=2, save_steps=1
    )
    train(recipe)
    run = Path(recipe.train.output_dir)
    # tensor bytes changed behind a valid header, same size: the manifest agrees, the SHA-256
    # recorded in config.json does not, so resume skips it by name like llavakit.load refuses it
    weights = run / "checkpoint-2" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"^{weights}: corrupt: its SHA-256"):
        llavakit.load(run / "checkpoint-2")
    recipe.train.max_steps = 3
    with caplog.at_level(logging.INFO, logger="llavakit.train.run"):
        train(recipe)
    skipped = "skipping an incomplete or damaged checkpoint: "
    assert f"{skipped}{weights}: corrupt: its SHA-256" in caplog.text
    assert f"resuming from {run / 'checkpoint-1'}" in caplog.text
    steps = [p["step"] for p in json.loads((run / "loss_history.json").read_text())]
    assert steps == [1, 2, 3]
    # a truncated trainer_state.json is skipped by name; the run resumes from checkpoint-2
    caplog.clear()
    state = run / "checkpoint-3" / "trainer_state.json"
    state.write_text(state.read_text()[:30])
    recipe.train.max_steps = 4
    with caplog.at_level(logging.INFO, logger="llavakit.train.run"):
        train(recipe)
    assert f"{skipped}{state}: not valid JSON" in caplog.text
    assert f"resuming from {run / 'checkpoint-2'}" in caplog.text
    # a checkpoint that recorded no checksums (an older save): damage only reading can see is
    # one line naming the file, not a loader's traceback
    folder = run / "checkpoint-4"
    config = json.loads((folder / "config.json").read_text())
    del config["checksums"]
    (folder / "config.json").write_text(json.dumps(config))
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40] + b"\0" * (weights.stat().st_size - 40))
    checkpoints.seal(folder)  # sizes agree: only reading it shows the damage
    recipe.train.max_steps = 5
    with pytest.raises(CheckpointError, match=f"^{weights}: not a safetensors file"):
        train(recipe)


def test_optimizer_state_that_cannot_be_read_is_one_line_naming_the_folder(
    tmp_path, tiny_model_config, tiny_data
):
    recipe = tiny.tiny_recipe(
        tiny_model_config, tiny_data, tmp_path / "run", "align", max_steps=1, save_steps=1
    )
    run = train(recipe)
    folder = run / "checkpoint-1"
    optimizer = folder / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:50])
    checkpoints.seal(folder)  # sizes agree: only reading it shows the damage
    recipe.train.max_steps = 2
    with pytest.raises(CheckpointError) as error:
        train(recipe)
    message = str(error.value)
    assert message.startswith(f"{folder}: the optimizer/scheduler state cannot be loaded: ")
    assert "\n" not in message


def test_qlora_is_refused_on_cpu_with_a_reason(tiny_model_config):
    model = tiny_model_config
    lora = LoraSettings(r=4, alpha=8)
    from dataclasses import replace

    from llavakit.config import TrainConfig

    quantised = replace(model, load_in_bits=4)
    with pytest.raises(ConfigError, match="set train.lora"):
        check_quantised_training(quantised, TrainConfig(stage="instruct"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="needs a CUDA GPU .* this machine has none"):
            check_quantised_training(quantised, TrainConfig(stage="instruct", lora=lora))
    with pytest.raises(ConfigError, match="must be 4 or 8"):
        check_quantised_training(replace(model, load_in_bits=3), TrainConfig(lora=lora))
    recipe = load_recipe(recipe_path("llava15_7b_qlora"))
    assert recipe.model.load_in_bits == 4 and recipe.train.lora is not None


def test_deepspeed_bucket_sizes_come_from_the_language_model(tiny_model_config):
    model, _ = build_model(tiny_model_config)
    config = deepspeed_config_for(packaged_path("zero3.json"), model)
    zero = config["zero_optimization"]
    hidden = tiny.TEXT_DIM
    assert zero["reduce_bucket_size"] == hidden * hidden
    assert zero["stage3_prefetch_bucket_size"] == int(0.9 * hidden * hidden)
    assert zero["stage3_param_persistence_threshold"] == 10 * hidden
    assert config["train_batch_size"] == "auto"  # the Trainer's own autos stay


def test_final_save_is_published_config_last(tmp_path):
    staged, destination = tmp_path / "staged", tmp_path / "out"
    (staged / "language_model").mkdir(parents=True)
    (staged / "language_model" / "w").write_text("new")
    (staged / "config.json").write_text("{}")
    (destination / "language_model").mkdir(parents=True)
    (destination / "language_model" / "old").write_text("old")
    (destination / "config.json").write_text('{"old": 1}')
    checkpoints.publish_into(staged, destination)
    assert not staged.exists() and (destination / "config.json").read_text() == "{}"
    assert [p.name for p in (destination / "language_model").iterdir()] == ["w"]
    shutil.rmtree(destination)


def test_resuming_under_another_strategy_is_refused_by_name(tmp_path):
    folder = fake_checkpoint(tmp_path / "checkpoint-4", 4)
    checkpoints.check_same_strategy(folder, "one process or DDP")
    (folder / "optimizer_0").mkdir()
    with pytest.raises(ValueError, match=f"^{folder} was written under FSDP and this run uses"):
        checkpoints.check_same_strategy(folder, "one process or DDP")
    checkpoints.check_same_strategy(folder, "FSDP")
