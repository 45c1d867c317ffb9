"""What every checkpoint converter shares: its error, its report, and weight folders in and out.

Converters read checkpoints written by other tools, so every weight file is untrusted: safetensors
is read (after a check of its header), pickle (`*.bin`) is refused with the `llavakit convert-bin`
command that rewrites it (`convert_bin`, the one reader of pickles). Output is always
safetensors, sharded the way Hugging Face folders are (`model-00001-of-0000N.safetensors` plus an
index), so any transformers version, vLLM or SGLang can read it.

The converters themselves live next to this module: `convert_hf` (transformers'
LlavaForConditionalGeneration format), `convert_llava` (the original LLaVA repository's layout and
released weight deltas), `convert_template` (llavakit templates as Jinja chat templates) and
`convert_bin` (pickled weights to safetensors, on request).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub import split_torch_state_dict_into_shards
from safetensors import safe_open
from safetensors.torch import save_file

from llavakit.model.integrity import check_safetensors, pickle_refusal, require_safetensors

SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_INDEX = "pytorch_model.bin.index.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
)


class ConversionError(ValueError):
    """A checkpoint cannot be converted as asked; the message names the file/field and why."""


@dataclass
class ConversionReport:
    """Where a conversion wrote its result and what the user must know about it."""

    folder: Path
    notes: list[str] = field(default_factory=list)
    """Warnings and facts worth printing (lossy choices, settings callers must apply themselves)."""


def load_weight_file(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of one `.safetensors` file (a pickle is refused, naming how to convert it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file {path} does not exist")
    if path.suffix != ".safetensors":
        raise pickle_refusal(path)
    check_safetensors(path)
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


def weight_files(folder: Path) -> list[Path]:
    """A folder's model weight files: its safetensors, else its pickled model files (which
    readers refuse, so that the refusal can say how to convert them)."""
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return files
    # Training leftovers (optimizer states, training args) are pickles too; only weights count.
    return sorted(p for p in folder.glob("*.bin") if p.name.startswith(("pytorch_model", "model")))


class WeightFolder:
    """The safetensors tensors of a Hugging Face-style folder, read one file at a time.

    Keys are known up front (from the headers), so a converter can check names before it writes
    any tensor. A folder of pickled weights only is refused (see `integrity.pickle_refusal`).
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"weights folder {self.folder} does not exist")
        self.files = require_safetensors(self.folder, "weights")
        self._file_of: dict[str, Path] = {}
        for path in self.files:
            with safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():
                    self._file_of[key] = path

    def keys(self) -> list[str]:
        return list(self._file_of)

    def __contains__(self, key: str) -> bool:
        return key in self._file_of

    def keys_by_file(self) -> dict[Path, list[str]]:
        grouped: dict[Path, list[str]] = {path: [] for path in self.files}
        for key, path in self._file_of.items():
            grouped[path].append(key)
        return grouped

    def get(self, key: str) -> torch.Tensor:
        with safe_open(str(self._file_of[key]), framework="pt") as handle:
            return handle.get_tensor(key)


def write_shards(folder: Path, shards: Iterable[dict[str, torch.Tensor]], count: int) -> None:
    """Write `count` already-grouped shards as `model[-0000i-of-0000N].safetensors` + index.

    Shards arrive one at a time (an iterator), so a converter holds one shard in memory at most.
    """
    folder.mkdir(parents=True, exist_ok=True)
    weight_map: dict[str, str] = {}
    total = 0
    written = 0
    for index, shard in enumerate(shards, start=1):
        name = (
            "model.safetensors" if count == 1 else f"model-{index:05d}-of-{count:05d}.safetensors"
        )
        shard = {key: value.contiguous() for key, value in shard.items()}
        save_file(shard, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
        total += sum(value.numel() * value.element_size() for value in shard.values())
        written = index
    if written != count:
        raise RuntimeError(f"expected {count} shards, got {written}")
    if count > 1:
        index_doc = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (folder / SAFETENSORS_INDEX).write_text(json.dumps(index_doc, indent=2))


def write_state_dict(
    folder: Path, state: dict[str, torch.Tensor], max_shard_size: str | int = "5GB"
) -> None:
    """Write a whole state dict, split into shards of at most `max_shard_size`."""
    split = split_torch_state_dict_into_shards(state, max_shard_size=max_shard_size)
    groups = list(split.filename_to_tensors.values())
    write_shards(folder, ({key: state[key] for key in group} for group in groups), len(groups))


def copy_tokenizer_files(source: Path, target: Path) -> list[str]:
    """Copy the tokenizer files a folder has; returns their names (empty: the folder has none)."""
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
            copied.append(name)
    return copied


def has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (folder / "tokenizer.model").is_file()
