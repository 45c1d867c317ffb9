"""Training stages on tiny real models: freezing, falling loss, resume, LoRA, bad data, recipes."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tiny
import torch
import yaml
from safetensors.torch import load_file
from transformers import TrainerCallback

import llavakit
from llavakit.config import (
    DataSource,
    LoraSettings,
    RecipeConfig,
    TrainConfig,
    load_recipe,
    save_recipe,
)
from llavakit.conversation import template_names
from llavakit.data.records import DataError
from llavakit.model.io import build_model
from llavakit.train.recipes import recipe_names, recipe_path
from llavakit.train.run import packaged_path, train
from llavakit.train.stages import apply_stage, trainable_summary


def recipe(tiny_model_config, tiny_data, out: Path, stage: str, **train_fields) -> RecipeConfig:
    return tiny.tiny_recipe(tiny_model_config, tiny_data, out, stage, **train_fields)


def losses(folder: Path) -> list[float]:
    return [p["loss"] for p in json.loads((folder / "loss_history.json").read_text())]


def test_stage_presets_freeze_the_right_parts(tiny_model_config):
    model, _ = build_model(tiny_model_config)
    apply_stage(model, TrainConfig(stage="align"))
    assert set(trainable_summary(model)) == {"projector"}
    apply_stage(model, TrainConfig(stage="instruct"))
    assert set(trainable_summary(model)) == {"projector", "language_model"}
    apply_stage(model, TrainConfig(stage="instruct", tune_vision_tower=True))
    assert set(trainable_summary(model)) == {"projector", "language_model", "vision_tower"}
    with pytest.raises(ValueError, match="unknown training stage 'pretrain'"):
        apply_stage(model, TrainConfig(stage="pretrain"))


def test_align_then_instruct_loss_falls(tmp_path, tiny_model_config, tiny_data):
    stage1 = train(recipe(tiny_model_config, tiny_data, tmp_path / "s1", "align", epochs=4))
    curve = losses(stage1)
    assert len(curve) >= 8 and sum(curve[-3:]) / 3 < sum(curve[:3]) / 3
    assert not (stage1 / "language_model").exists()  # projector-only checkpoint
    assert (stage1 / "loss.png").stat().st_size > 0
    s2 = recipe(
        tiny_model_config, tiny_data, tmp_path / "s2", "instruct", epochs=3, init_from=str(stage1)
    )
    s2.model = dataclasses.replace(s2.model, vision_tower="", language_model="")
    stage2 = train(s2)
    curve = losses(stage2)
    assert sum(curve[-3:]) / 3 < sum(curve[:3]) / 3
    model, processor = llavakit.load(stage2)
    assert processor.template.name == "vicuna_v1"
    stage1_projector = load_file(str(stage1 / "projector.safetensors"))["projector.0.weight"]
    assert not torch.equal(
        model.projector[0].weight, stage1_projector
    )  # stage 2 trained it further


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


def test_resume_continues_from_last_checkpoint(tmp_path, tiny_model_config, tiny_data):
    def run(out, callbacks=None):
        r = recipe(tiny_model_config, tiny_data, out, "align", max_steps=4, save_steps=2)
        return train(r, callbacks=callbacks)

    straight = run(tmp_path / "straight")
    interrupted = tmp_path / "interrupted"
    run(interrupted, callbacks=[StopAt(2)])
    assert (interrupted / "checkpoint-2").is_dir()
    resumed = run(interrupted)
    assert [p["step"] for p in json.loads((resumed / "loss_history.json").read_text())][-1] == 4
    a = load_file(str(straight / "projector.safetensors"))
    b = load_file(str(resumed / "projector.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)


def test_lora_instruct_on_cpu(tmp_path, tiny_model_config, tiny_data):
    r = recipe(
        tiny_model_config,
        tiny_data,
        tmp_path / "lora",
        "instruct",
        max_steps=3,
        lora=LoraSettings(r=4, alpha=8, dropout=0.0),
        projector_lr=1e-3,
    )
    model, _ = build_model(r.model)
    apply_stage(model, r.train)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("projector") for n in trainable)
    folder = train(r)
    loaded, _ = llavakit.load(folder)
    assert not any("lora" in n for n, _ in loaded.named_parameters())  # merged on save


def test_bad_records_refused_or_skipped(tmp_path, tiny_model_config, tiny_data):
    records = json.loads(tiny_data["pretrain"].read_text())[:6]
    records[1]["conversations"][1]["value"] = "  "
    records[3]["image"] = "missing.png"
    records[4]["conversations"] = records[4]["conversations"][::-1]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(records))
    r = recipe(tiny_model_config, tiny_data, tmp_path / "out", "align", max_steps=1)
    r.data.train = [DataSource(path=str(bad))]
    with pytest.raises(DataError) as error:
        train(r)
    message = str(error.value)
    assert "3 of 6 record(s) are invalid" in message
    assert "record #1 (id=p1): conversations[1].value: empty answer" in message
    assert "missing.png does not exist" in message
    assert "id=p4" in message and "expected 'human'" in message
    r.data.skip_bad_records = True
    folder = train(r)
    config = json.loads((folder / "config.json").read_text())
    assert config["metadata"]["skipped_records"] >= 3


@pytest.mark.parametrize("name", recipe_names())
def test_every_shipped_recipe_loads(name):
    r = load_recipe(recipe_path(name))
    assert r.train.stage in ("align", "instruct")
    assert r.model.template in template_names()
    assert r.train.init_from or (r.model.vision_tower and r.model.language_model)
    for path in (r.train.deepspeed, r.train.fsdp_config):
        if path:
            assert Path(packaged_path(path)).is_file()


def test_recipe_overrides_and_unknown_keys(tmp_path):
    r = load_recipe(
        recipe_path("llava15_7b_finetune"),
        ["train.learning_rate=1e-4", "data.skip_bad_records=true"],
    )
    assert r.train.learning_rate == 1e-4 and r.data.skip_bad_records is True
    with pytest.raises(ValueError, match="unknown key.*learnin_rate"):
        load_recipe(recipe_path("llava15_7b_finetune"), ["train.learnin_rate=1"])


def test_torchrun_two_processes_matches_single_process(tmp_path, tiny_model_config, tiny_data):
    single = recipe(
        tiny_model_config,
        tiny_data,
        tmp_path / "single",
        "align",
        max_steps=6,
        per_device_batch_size=8,
    )
    double = recipe(
        tiny_model_config,
        tiny_data,
        tmp_path / "double",
        "align",
        max_steps=6,
        per_device_batch_size=4,
    )
    path = tmp_path / "double.yaml"
    save_recipe(double, path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
        "-m",
        "llavakit",
        "train",
        str(path),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    two = losses(tmp_path / "double")
    one = losses(train(single))
    assert len(one) == len(two) == 6
    assert two[-1] < two[0] and one[-1] < one[0]
    for a, b in zip(one, two):
        assert abs(a - b) / a < 0.05, (one, two)
    assert yaml.safe_load(path.read_text())["train"]["per_device_batch_size"] == 4
