"""`llavakit convert-bin IN OUT`: pickled PyTorch weights rewritten as safetensors, on request.

Everything else in llavakit refuses pickle (`llavakit.model.integrity`); this is the one place a
`.bin` is opened, and only because a person asked for it by name. Even here nothing is unpickled
freely: torch's restricted loader (`weights_only=True`) builds tensors and plain containers and
refuses any other object, so a payload hidden in the file is an error, not code that runs.

A file becomes one `.safetensors` file. A folder becomes a folder: each weight pickle becomes a
safetensors file (`pytorch_model*.bin` takes Hugging Face's `model*` name, so transformers finds
it), `pytorch_model.bin.index.json` becomes `model.safetensors.index.json`, and every other file
(config, tokenizer) is copied; training leftovers such as optimizer.pt are left out and named.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from llavakit.model.convert import (
    PICKLE_INDEX,
    SAFETENSORS_INDEX,
    ConversionError,
    ConversionReport,
)
from llavakit.model.integrity import PICKLE_SUFFIXES, TRAINING_LEFTOVERS, pickled_weight_files


def load_pickled_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A flat name -> tensor mapping from a pickle, read with torch's restricted loader."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ConversionError(
            f"{path}: refused by torch's restricted loader (weights_only=True): "
            f"{_refusal_reason(str(error))}; a plain weight file never holds more than tensors"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConversionError(f"{path}: not a readable PyTorch weight file ({reason})") from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ConversionError(f"{path} does not hold a flat name -> tensor mapping")
    # Tensors of one pickle may share storage (tied weights); safetensors refuses that.
    return {key: value.detach().clone().contiguous() for key, value in state.items()}


def _refusal_reason(message: str) -> str:
    """What torch's refusal says the file holds (not its advice on how to bypass the refusal)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line:  # "Unsupported global: GLOBAL io.open was not an allowed global"
            return line.split("WeightsUnpickler error:")[-1].strip().split(". ")[0].rstrip(".")
    return (lines or ["unknown reason"])[0].rstrip(".")


def safetensors_name(name: str) -> str:
    """pytorch_model-00001-of-00002.bin -> model-00001-of-00002.safetensors (HF's names)."""
    stem = Path(name).stem
    if stem.startswith("pytorch_model"):
        stem = "model" + stem[len("pytorch_model") :]
    return f"{stem}.safetensors"


def convert_bin(source: str | Path, out: str | Path) -> ConversionReport:
    """Rewrite a pickled weight file, or a folder holding some, as safetensors (see module doc)."""
    source, out = Path(source), Path(out)
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist")
    if out.resolve() == source.resolve():
        raise ConversionError(f"the output {out} must not be the input itself")
    if source.is_file():
        if out.suffix != ".safetensors":
            raise ConversionError(f"{out}: the output of one file must end in .safetensors")
        out.parent.mkdir(parents=True, exist_ok=True)
        tensors = load_pickled_tensors(source)
        save_file(tensors, str(out), metadata={"format": "pt"})
        return ConversionReport(out, [f"{len(tensors)} tensors from {source}"])
    pickles = pickled_weight_files(source)
    if not pickles:
        raise ConversionError(f"{source} holds no pickled weights (*.bin, *.pt, *.pth)")
    out.mkdir(parents=True, exist_ok=True)
    notes = []
    for path in pickles:
        tensors = load_pickled_tensors(path)
        save_file(tensors, str(out / safetensors_name(path.name)), metadata={"format": "pt"})
        notes.append(f"{path.name} -> {safetensors_name(path.name)} ({len(tensors)} tensors)")
    for path in sorted(source.iterdir()):
        if path.name in TRAINING_LEFTOVERS:
            notes.append(f"left out {path.name} (training state, not weights)")
        elif path.is_file() and path.suffix not in PICKLE_SUFFIXES and path.name != PICKLE_INDEX:
            shutil.copy2(path, out / path.name)
    if (source / PICKLE_INDEX).is_file():
        index = json.loads((source / PICKLE_INDEX).read_text())
        index["weight_map"] = {
            key: safetensors_name(file) for key, file in index.get("weight_map", {}).items()
        }
        (out / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2))
    return ConversionReport(out, notes)
