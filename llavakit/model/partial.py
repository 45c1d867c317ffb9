"""Checkpoints that hold only what a stage trained, over components referenced by path.

A training checkpoint (`checkpoint-N/`) and an unmerged LoRA checkpoint are llavakit checkpoints
whose config.json references every component by path and adds

    "trained_weights": {"file": "model.safetensors", "lora": null | LoraSettings}

The file holds the trained parameters under the model's own names (`projector.0.weight`,
`language_model.model.layers.0.mlp.up_proj.weight`, `...q_proj.lora_A.default.weight`), the same
names transformers' Trainer resumes from. Loading builds the model from the referenced folders,
wraps the language model in the recorded LoRA adapters when there are any, and puts these
tensors in: every one must name a parameter of that model with the same shape.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from llavakit.model.integrity import CheckpointError, check_safetensors
from llavakit.model.lora import merge_lora, settings_from_record, wrap_lora

TRAINED_WEIGHTS = "model.safetensors"
"""Also transformers' name for a model's weights file, so the Trainer finds it on resume."""


def write_trained_weights(
    folder: Path, weights: dict[str, torch.Tensor], lora: dict | None
) -> dict[str, object]:
    """Write the tensors; returns the `trained_weights` entry for config.json."""
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in weights.items()}
    save_file(tensors, str(folder / TRAINED_WEIGHTS), metadata={"format": "pt"})
    return {"file": TRAINED_WEIGHTS, "lora": lora}


def read_trained_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a trained-weights file, or a one-line error naming it."""
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist (the checkpoint's trained weights)")
    check_safetensors(path)  # a truncated or foreign file is named before the loader sees it
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, RuntimeError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from None


def check_fits(model: nn.Module, weights: dict[str, torch.Tensor], path: Path) -> None:
    """Every tensor names a parameter of `model` with the same shape."""
    parameters = dict(model.named_parameters())
    unknown = sorted(set(weights) - set(parameters))
    if unknown:
        raise CheckpointError(
            f"{path}: {len(unknown)} tensor(s) name no parameter of this model, e.g. "
            + ", ".join(unknown[:3])
        )
    for name, tensor in weights.items():
        if tensor.shape != parameters[name].shape:
            raise CheckpointError(
                f"{path}: {name} is {tuple(tensor.shape)}, the model's is "
                f"{tuple(parameters[name].shape)}"
            )


def apply_trained_weights(model, folder: Path, entry: dict, merge: bool) -> None:
    """Wrap LoRA adapters as recorded, load the trained tensors, and merge the adapters if asked."""
    path = folder / str(entry.get("file") or TRAINED_WEIGHTS)
    weights = read_trained_weights(path)
    if entry.get("lora") is not None:
        settings = settings_from_record(
            entry["lora"], f"{folder / 'config.json'}: trained_weights.lora"
        )
        model.language_model = wrap_lora(model.language_model, settings)
    check_fits(model, weights, path)
    model.load_state_dict(weights, strict=False)
    if merge:
        model.language_model = merge_lora(model.language_model)


def merge_lora_checkpoint(checkpoint: str | Path, output: str | Path) -> Path:
    """`llavakit merge-lora`: a checkpoint with unmerged LoRA adapters (or any checkpoint of
    trained weights over referenced parts) written as a standard, self-contained checkpoint."""
    from llavakit.model.io import load_checkpoint, read_checkpoint_config, save_checkpoint

    checkpoint, output = Path(checkpoint), Path(output)
    _, document = read_checkpoint_config(checkpoint)
    if not document.get("trained_weights"):
        raise CheckpointError(f"{checkpoint / 'config.json'} records no adapters to merge")
    if output.resolve() == checkpoint.resolve():
        raise CheckpointError(f"{output}: write the merged checkpoint to another folder")
    model, processor = load_checkpoint(checkpoint, overrides={"load_in_bits": None})
    metadata = {**document.get("metadata", {}), "merged_from": str(checkpoint.resolve())}
    return save_checkpoint(model, processor, output, metadata=metadata)
