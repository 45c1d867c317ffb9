"""Sharded training on CPU processes (torch.distributed with gloo under torchrun).

FSDP2, 2 processes, stage 2 fine-tuning the whole LLM with the shipped fsdp.json: the loss curve
equals one process's; a mid-run checkpoint loads with `llavakit.load` and equals the weights
FSDP itself saved in shards; a kill -9 inside a save, then a rerun, ends where an uninterrupted
run ends. ZeRO-3 runs the same checks when DeepSpeed is installed (it is not a dev dependency);
always, the Trainer's save path is driven with a gathered state dict that differs from the
module's local parameters.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tiny
import torch
from killing import kill_during_save
from safetensors.torch import load_file

import llavakit
from llavakit.config import ConfigError, save_recipe
from llavakit.model.io import CheckpointError, build_model
from llavakit.train.run import train, training_arguments
from llavakit.train.stages import apply_stage
from llavakit.train.trainer import LlavaTrainer


def torchrun(recipe, port: int) -> Path:
    path = Path(recipe.train.output_dir + ".yaml")
    save_recipe(recipe, path)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_port", str(port), "-m", "llavakit", "train", str(path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return Path(recipe.train.output_dir)


def losses(folder: Path) -> list[float]:
    return [p["loss"] for p in json.loads((folder / "loss_history.json").read_text())]


def assert_same_state(a: dict, b: dict, atol: float):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=1e-5, msg=name)


def fsdp_shards_consolidated(folder: Path, like: dict) -> dict:
    """Read the FSDP2 sharded model state (torch.distributed.checkpoint) in one process."""
    import torch.distributed.checkpoint as dcp

    state = {"model": {name: torch.empty_like(t) for name, t in like.items()}}
    dcp.load(state, checkpoint_id=str(folder / "pytorch_model_fsdp_0"))
    return state["model"]


@pytest.fixture
def recipe(tmp_path, tiny_model_config, tiny_data, tiny_checkpoint):
    """recipe(name, batch, **train fields): stage 2 from the tiny checkpoint into tmp_path/name."""

    def make(name: str, batch: int, **fields):
        return tiny.tiny_stage2_recipe(
            tiny_model_config, tiny_data, tiny_checkpoint, tmp_path / name, batch, **fields
        )

    return make


def test_fsdp2_two_processes(tmp_path, recipe):
    single = train(recipe("single", 8))
    straight = torchrun(recipe("fsdp", 4, fsdp_config="fsdp.json"), port=29561)
    one, two = losses(single), losses(straight)
    assert len(one) == len(two) == 4 and two[-1] < two[0]
    for a, b in zip(one, two):
        assert abs(a - b) / a < 1e-2, (one, two)

    middle = straight / "checkpoint-2"
    assert (middle / "pytorch_model_fsdp_0").is_dir()  # FSDP's own sharded state, for resume
    model, _ = llavakit.load(middle)
    loaded = model.state_dict()
    assert_same_state(fsdp_shards_consolidated(middle, loaded), loaded, atol=0)
    trained = load_file(str(middle / "model.safetensors"))
    assert any(n.startswith("language_model.model.layers.1.") for n in trained)
    for name, tensor in trained.items():
        assert torch.equal(loaded[name], tensor), name

    interrupted = recipe("killed", 4, fsdp_config="fsdp.json")
    kill_during_save(interrupted, tmp_path / "kill", step=4, processes=2, port=29562)
    assert (tmp_path / "killed" / "checkpoint-2").is_dir()
    assert not (tmp_path / "killed" / "checkpoint-4").exists()
    resumed = torchrun(interrupted, port=29563)
    assert [p["step"] for p in json.loads((resumed / "loss_history.json").read_text())] == [
        1,
        2,
        3,
        4,
    ]
    for a, b in zip(two, losses(resumed)):
        assert abs(a - b) < 1e-5
    final_straight, _ = llavakit.load(straight)
    final_resumed, _ = llavakit.load(resumed)
    assert_same_state(final_straight.state_dict(), final_resumed.state_dict(), atol=1e-6)


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="DeepSpeed not installed")
def test_zero3_two_processes(tmp_path, recipe):
    single = train(recipe("single", 8))
    zero3 = torchrun(recipe("zero3", 4, deepspeed="zero3.json"), port=29564)
    for a, b in zip(losses(single), losses(zero3)):
        assert abs(a - b) / a < 1e-2
    middle = zero3 / "checkpoint-2"
    trained = load_file(str(middle / "model.safetensors"))
    single_trained = load_file(str(single / "checkpoint-2" / "model.safetensors"))
    assert_same_state(trained, single_trained, atol=1e-4)
    model, _ = llavakit.load(middle)
    for name, tensor in trained.items():
        assert torch.equal(model.state_dict()[name], tensor), name

    interrupted = recipe("killed", 4, deepspeed="zero3.json")
    kill_during_save(interrupted, tmp_path / "kill", step=4, processes=2, port=29565)
    assert not (tmp_path / "killed" / "checkpoint-4").exists()
    resumed = torchrun(interrupted, port=29566)
    for a, b in zip(losses(zero3), losses(resumed)):
        assert abs(a - b) < 1e-5
    final_straight, _ = llavakit.load(zero3)
    final_resumed, _ = llavakit.load(resumed)
    assert_same_state(final_straight.state_dict(), final_resumed.state_dict(), atol=1e-6)


def trainer_for(tmp_path, tiny_model_config, tiny_data):
    recipe = tiny.tiny_recipe(tiny_model_config, tiny_data, tmp_path / "out", "instruct")
    model, processor = build_model(recipe.model)
    apply_stage(model, recipe.train)
    args = training_arguments(recipe, model)
    return LlavaTrainer(model=model, args=args, llava_config=recipe.train, processor=processor)


def test_save_writes_the_gathered_state_not_local_parameters(
    tmp_path, tiny_model_config, tiny_data
):
    """What ZeRO-3 hands `_save` (whole tensors gathered from every rank) is what is written,
    even though the module's own parameters (partitions there) differ."""
    trainer = trainer_for(tmp_path, tiny_model_config, tiny_data)
    model = trainer.model
    gathered = {n: torch.full_like(p, 0.25) for n, p in model.state_dict().items()}
    trainer._save(str(tmp_path / "ckpt"), state_dict=gathered)
    written = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(written) == trained  # only trained parameters, frozen ones stay referenced
    assert all(torch.all(t == 0.25) for t in written.values())
    loaded, _ = llavakit.load(tmp_path / "ckpt")
    assert torch.all(loaded.projector[0].weight == 0.25)
    assert not torch.all(model.projector[0].weight == 0.25)

    partition = dict(gathered)
    partition["projector.0.weight"] = torch.zeros(0)  # what a ZeRO-3 rank holds locally
    with pytest.raises(CheckpointError, match="projector.0.weight is a local shard"):
        trainer._save(str(tmp_path / "bad"), state_dict=partition)
    gathered.pop("projector.0.bias")
    with pytest.raises(CheckpointError, match="lacks 1 trained parameter.*projector.0.bias"):
        trainer._save(str(tmp_path / "bad"), state_dict=gathered)
    trainer._save(str(tmp_path / "zero"), state_dict={})  # ZeRO-3 without gathering: no file
    assert not (tmp_path / "zero" / "model.safetensors").exists()


def test_fsdp_config_keys_transformers_ignores_are_refused(tmp_path, tiny_model_config, tiny_data):
    recipe = tiny.tiny_recipe(tiny_model_config, tiny_data, tmp_path / "out", "instruct")
    model, _ = build_model(recipe.model)
    config = tmp_path / "fsdp1.json"
    config.write_text(json.dumps({"version": 2, "backward_prefetch": "backward_pre"}))
    recipe.train.fsdp_config = str(config)
    with pytest.raises(ConfigError, match=r"fsdp1.json: key 'backward_prefetch' is ignored by"):
        training_arguments(recipe, model)
    recipe.train.fsdp_config = "fsdp.json"
    args = training_arguments(recipe, model)  # the shipped config: every key is read
    assert args.fsdp_plugin_args["fsdp_version"] == 2
    assert (
        args.fsdp_plugin_args["transformer_cls_names_to_wrap"]
        == "CLIPEncoderLayer,CLIPVisionEmbeddings,LlamaDecoderLayer"
    )
    assert args.fsdp_plugin_args["activation_checkpointing"] is True
    assert args.fsdp_plugin_args["cpu_ram_efficient_loading"] is True
    recipe.train.deepspeed = "zero3.json"
    with pytest.raises(ConfigError, match="choose one"):
        training_arguments(recipe, model)
