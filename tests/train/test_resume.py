"""kill -9 in the middle of a checkpoint save, stage 2 full and LoRA: the rerun names the broken
save, resumes from the previous complete checkpoint, and ends where an uninterrupted run ends.
Unmerged LoRA checkpoints load, merge (`llavakit merge-lora`) and export."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import tiny
import torch
from killing import kill_during_save
from PIL import Image

import llavakit
from llavakit.cli import main as cli
from llavakit.config import LoraSettings
from llavakit.data.collate import collate_samples
from llavakit.model.lora import has_lora
from llavakit.train.run import train


def losses(folder: Path) -> list[tuple[int, float]]:
    return [(p["step"], p["loss"]) for p in json.loads((folder / "loss_history.json").read_text())]


def logits(model, processor) -> torch.Tensor:
    messages = [
        {"role": "user", "content": "<image>\nWhat colour is the square?"},
        {"role": "assistant", "content": "The square is red."},
    ]
    sample = processor.encode(messages, [Image.new("RGB", (40, 30), (200, 10, 10))])
    with torch.no_grad():
        return model(**collate_samples([sample], processor.pad_token_id)).logits


def assert_same_weights(a, b, atol=1e-6):
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        torch.testing.assert_close(state_a[name], state_b[name], atol=atol, rtol=1e-5, msg=name)


def killed_then_resumed(recipe, caplog) -> Path:
    out = Path(recipe.train.output_dir)
    kill_during_save(recipe, out.parent / f"{out.name}-kill", step=4)
    assert (out / "checkpoint-2" / "manifest.json").is_file()
    assert not (out / "checkpoint-4").exists() and not (out / "config.json").exists()
    broken = out / ".incomplete" / "checkpoint-4"
    assert (broken / "optimizer.pt").stat().st_size > 0  # half written when killed
    with caplog.at_level(logging.INFO, logger="llavakit.train.run"):
        train(recipe)
    log = caplog.text
    assert f"skipping an incomplete or damaged checkpoint: {broken}: an interrupted save" in log
    assert f"resuming from {out / 'checkpoint-2'}" in log
    assert not (out / ".incomplete").exists()
    return out


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_kill_during_save_resumes_stage2(
    mode, tmp_path, tiny_model_config, tiny_data, tiny_checkpoint, caplog
):
    fields = {}
    if mode == "lora":
        fields = dict(lora=LoraSettings(r=4, alpha=8, dropout=0.0, merge_on_save=False))
    straight = train(
        tiny.tiny_stage2_recipe(
            tiny_model_config, tiny_data, tiny_checkpoint, tmp_path / "a", **fields
        )
    )
    resumed = killed_then_resumed(
        tiny.tiny_stage2_recipe(
            tiny_model_config, tiny_data, tiny_checkpoint, tmp_path / "b", **fields
        ),
        caplog,
    )
    assert [s for s, _ in losses(resumed)] == [1, 2, 3, 4]
    for (_, x), (_, y) in zip(losses(straight), losses(resumed)):
        assert abs(x - y) < 1e-5
    model_a, processor = llavakit.load(straight, merge_lora=False)
    model_b, _ = llavakit.load(resumed, merge_lora=False)
    assert has_lora(model_b.language_model) == (mode == "lora")
    assert_same_weights(model_a, model_b)
    if mode == "lora":
        check_unmerged_lora(resumed, model_b, processor, tmp_path)


def check_unmerged_lora(folder: Path, unmerged, processor, tmp_path):
    """The unmerged checkpoint references its base; merging gives the same logits."""
    config = json.loads((folder / "config.json").read_text())
    assert config["trained_weights"]["lora"]["r"] == 4
    assert not (folder / "language_model").exists()  # the base is referenced, not copied
    adapters = [n for n, _ in unmerged.named_parameters() if "lora_B" in n]
    assert adapters and any(
        p.abs().sum() > 0 for n, p in unmerged.named_parameters() if "lora_B" in n
    )
    assert cli(["merge-lora", str(folder), str(tmp_path / "merged")]) == 0
    merged, merged_processor = llavakit.load(tmp_path / "merged")
    assert not has_lora(merged.language_model) and (tmp_path / "merged" / "language_model").is_dir()
    assert "trained_weights" not in json.loads((tmp_path / "merged" / "config.json").read_text())
    torch.testing.assert_close(
        logits(unmerged, processor), logits(merged, merged_processor), atol=1e-5, rtol=1e-4
    )
    by_default, _ = llavakit.load(folder)  # merged while loading
    assert not has_lora(by_default.language_model)
    from llavakit.model.convert_hf import export_hf

    export_hf(folder, tmp_path / "hf_unmerged")
    export_hf(tmp_path / "merged", tmp_path / "hf_merged")
    from safetensors.torch import load_file

    a = load_file(str(next((tmp_path / "hf_unmerged").glob("*.safetensors"))))
    b = load_file(str(next((tmp_path / "hf_merged").glob("*.safetensors"))))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5, msg=name)


def test_mid_run_checkpoint_is_a_loadable_checkpoint(tmp_path, tiny_model_config, tiny_data):
    """checkpoint-N holds only trained weights, references the rest, and llavakit.load opens it."""
    recipe = tiny.tiny_recipe(
        tiny_model_config, tiny_data, tmp_path / "s1", "align", max_steps=2, save_steps=2
    )
    final = train(recipe)
    checkpoint = final / "checkpoint-2"
    from safetensors.torch import load_file

    trained = load_file(str(checkpoint / "model.safetensors"))
    assert trained and all(name.startswith("projector.") for name in trained)
    model, _ = llavakit.load(checkpoint)
    parameters = dict(model.named_parameters())
    for name, tensor in trained.items():
        assert torch.equal(parameters[name], tensor), name
    final_model, _ = llavakit.load(final)
    assert_same_weights(model, final_model, atol=0)
