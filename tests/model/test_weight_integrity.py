"""Weight files on load: damaged files are one-line errors naming the file, corrupted bytes behind
a valid header fail their checksum, and pickled weights are refused without being unpickled
(`llavakit convert-bin` converts them, on request, with torch's restricted loader)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import llavakit
from llavakit.cli import main as cli_main
from llavakit.model.convert_llava import apply_delta
from llavakit.model.integrity import CheckpointError, WeightFileError, check_safetensors
from llavakit.model.io import build_model, save_checkpoint

LLM_WEIGHTS = "language_model/model.safetensors"


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_model_config) -> Path:
    model, processor = build_model(tiny_model_config)
    return save_checkpoint(model, processor, tmp_path_factory.mktemp("ckpt") / "model")


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garbage(path: Path) -> None:
    path.write_bytes(b"this is not a weight file\n" * 40)


def empty(path: Path) -> None:
    path.write_bytes(b"")


def flip_tensor_bytes(path: Path) -> None:
    """Corrupt the last 64 bytes of tensor data; the header stays valid."""
    data = bytearray(path.read_bytes())
    data[-64:] = bytes(255 - b for b in data[-64:])
    path.write_bytes(bytes(data))
    check_safetensors(path)  # still a well-formed file: only the checksum can tell


@pytest.mark.parametrize(
    ("name", "damage", "problem"),
    [
        (LLM_WEIGHTS, truncate, "truncated: its header describes"),
        ("vision_tower/model.safetensors", garbage, "not a complete safetensors file"),
        ("projector.safetensors", empty, "empty file (0 bytes)"),
        (LLM_WEIGHTS, flip_tensor_bytes, "corrupt: its SHA-256 is"),
        ("projector.safetensors", flip_tensor_bytes, "corrupt: its SHA-256 is"),
    ],
)
def test_a_damaged_weight_file_is_a_one_line_error_naming_it(
    tmp_path, saved, name, damage, problem
):
    folder = tmp_path / "model"
    shutil.copytree(saved, folder)
    damage(folder / name)
    with pytest.raises(CheckpointError) as caught:
        llavakit.load(folder)
    message = str(caught.value)
    assert message.startswith(f"{folder / name}: ") and problem in message
    assert "\n" not in message
    # Nothing else was touched: the one file restored, the checkpoint loads bit-exact.
    shutil.copy2(saved / name, folder / name)
    restored, _ = llavakit.load(folder)
    original, _ = llavakit.load(saved)
    for (key, a), (_, b) in zip(original.state_dict().items(), restored.state_dict().items()):
        assert torch.equal(a, b), key


def test_referenced_and_older_checkpoints_are_still_checked_for_truncation(tmp_path, saved):
    """No checksum covers a frozen part referenced by path, nor a checkpoint saved before
    checksums existed; their files are still read for truncation before any loader sees them."""
    folder = tmp_path / "model"
    shutil.copytree(saved, folder)
    document = json.loads((folder / "config.json").read_text())
    del document["checksums"]
    (folder / "config.json").write_text(json.dumps(document))
    llavakit.load(folder)  # whole files: loads as before
    truncate(folder / LLM_WEIGHTS)
    with pytest.raises(WeightFileError, match=f"^{folder / LLM_WEIGHTS}: truncated"):
        llavakit.load(folder)


def test_the_cli_reports_a_truncated_checkpoint_in_one_line(tmp_path, saved):
    folder = tmp_path / "model"
    shutil.copytree(saved, folder)
    truncate(folder / LLM_WEIGHTS)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LLAVAKIT_DEBUG": ""}
    command = [sys.executable, "-m", "llavakit", "chat", str(folder), "--query", "hi"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"llavakit chat: error: {folder / LLM_WEIGHTS}: truncated")
    )


def test_unreadable_checkpoint_config_names_the_file(tmp_path, saved):
    folder = tmp_path / "model"
    shutil.copytree(saved, folder)
    config = folder / "config.json"
    config.write_text(config.read_text()[:100])
    with pytest.raises(CheckpointError, match=f"^{config}: not valid JSON .*incomplete or corrupt"):
        llavakit.load(folder)


# ---- pickle ----------------------------------------------------------------------------------
class Payload:
    """Unpickled by anything but a restricted loader, this creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def no_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", refuse)
    return monkeypatch


def pickled_copy(folder: Path, out: Path, *extra: tuple[str, object]) -> Path:
    """A copy of an HF folder whose safetensors weights are stored as pytorch_model.bin."""
    shutil.copytree(folder, out)
    state = load_file(str(out / "model.safetensors"))
    (out / "model.safetensors").unlink()
    torch.save({**state, **dict(extra)}, out / "pytorch_model.bin")
    return out


def test_pickled_weights_are_refused_with_the_conversion_command(
    tmp_path, tiny_model_config, tiny_llama, tiny_clip, no_unpickling
):
    marker = tmp_path / "unpickled"
    llm = pickled_copy(tiny_llama, tmp_path / "llm", ("x", Payload(marker)))
    tower = pickled_copy(tiny_clip, tmp_path / "tower")
    for field, folder in (("language_model", llm), ("vision_tower", tower)):
        config = dataclasses.replace(tiny_model_config, **{field: str(folder)})
        with pytest.raises(WeightFileError) as caught:
            build_model(config)  # what train, chat, serve and export all load through
        assert str(caught.value).startswith(
            f"{folder / 'pytorch_model.bin'} holds pickled PyTorch weights"
        )
        assert f"`llavakit convert-bin {folder} {folder}-safetensors`" in str(caught.value)
    for source in (llm, tower):  # the weight-delta and original-LLaVA import paths too
        with pytest.raises(WeightFileError, match="holds pickled PyTorch weights"):
            apply_delta(source, source, tmp_path / "merged")
    assert not marker.exists()


def test_a_pickle_beside_safetensors_is_never_read(tmp_path, tiny_model_config, tiny_llama):
    marker = tmp_path / "unpickled"
    llm = tmp_path / "llm"
    shutil.copytree(tiny_llama, llm)
    torch.save({"x": Payload(marker)}, llm / "pytorch_model.bin")
    build_model(dataclasses.replace(tiny_model_config, language_model=str(llm)))
    assert not marker.exists()


def test_convert_bin_rewrites_a_sharded_folder_that_then_loads(
    tmp_path, tiny_model_config, tiny_llama, capsys
):
    source = tmp_path / "llm"
    shutil.copytree(tiny_llama, source)
    state = load_file(str(source / "model.safetensors"))
    (source / "model.safetensors").unlink()
    names = sorted(state)
    halves = {
        "pytorch_model-00001-of-00002.bin": names[::2],
        "pytorch_model-00002-of-00002.bin": names[1::2],
    }
    weight_map = {}
    for file, keys in halves.items():
        torch.save({key: state[key] for key in keys}, source / file)
        weight_map.update(dict.fromkeys(keys, file))
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (source / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    torch.save({"learning_rate": 1e-3}, source / "training_args.bin")

    out = tmp_path / "llm-safetensors"
    assert cli_main(["convert-bin", str(source), str(out)]) == 0
    assert "left out training_args.bin" in capsys.readouterr().err
    assert sorted(p.name for p in out.glob("*.safetensors")) == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    assert not list(out.glob("*.bin")) and (out / "tokenizer.json").is_file()
    converted, _ = build_model(dataclasses.replace(tiny_model_config, language_model=str(out)))
    reference, _ = build_model(tiny_model_config)
    for (key, a), (_, b) in zip(
        reference.language_model.state_dict().items(),
        converted.language_model.state_dict().items(),
    ):
        assert torch.equal(a, b), key


def test_convert_bin_refuses_a_payload_and_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "unpickled"
    torch.save({"w": torch.zeros(2), "x": Payload(marker)}, tmp_path / "evil.bin")
    out = tmp_path / "evil.safetensors"
    assert cli_main(["convert-bin", str(tmp_path / "evil.bin"), str(out)]) == 2
    error = capsys.readouterr().err
    assert "refused by torch's restricted loader (weights_only=True)" in error
    assert "GLOBAL" in error and len(error.strip().splitlines()) == 1
    assert not marker.exists() and not out.exists()

    save_file({"w": torch.ones(2)}, str(tmp_path / "fine.safetensors"))
    torch.save({"w": torch.ones(2)}, tmp_path / "fine.bin")
    assert (
        cli_main(["convert-bin", str(tmp_path / "fine.bin"), str(tmp_path / "f.safetensors")]) == 0
    )
    assert torch.equal(load_file(str(tmp_path / "f.safetensors"))["w"], torch.ones(2))
