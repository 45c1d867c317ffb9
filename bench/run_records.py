"""What a training run did, recorded so that two runs can be compared step by step.

Used by learning_parity.py: a Trainer callback that logs every step's loss, learning rate and
gradient norm and fingerprints the samples each step trained on (the same for padded and packed
rows, and for either model's image placeholder id), the final weights, and a held-out loss
computed the same way for every run.
"""

from __future__ import annotations

import math
from pathlib import Path


def sample_hashes(kwargs: dict, placeholder: int, pad: int) -> list[str]:
    """The samples of one forward call, each hashed from its token ids (image placeholders
    written as -1, so either model's id gives the same hash), in sorted order."""
    import hashlib

    ids = kwargs["input_ids"]
    ids = ids.masked_fill(ids == placeholder, -1)  # [B, T]
    mask, positions = kwargs.get("attention_mask"), kwargs.get("position_ids")
    hashes = []
    for row in range(ids.shape[0]):
        if mask is not None and mask.dim() == 2:
            segments = [ids[row][mask[row].bool()]]
        else:  # a packed row: each sample starts where the positions restart at 0
            starts = (positions[row] == 0).nonzero().flatten().tolist() + [ids.shape[1]]
            segments = [ids[row, a:b] for a, b in zip(starts, starts[1:])]
        hashes += [
            hashlib.sha1(s.numpy().tobytes()).hexdigest()[:10] for s in segments if (s != pad).any()
        ]
    return sorted(hashes)


def recorder(pad: int, stop_at: int | None):
    """A TrainerCallback logging every step (loss, lr, grad norm, samples) and, with `stop_at`,
    stopping training after that step the way TimeBudget does after its time."""
    from transformers import TrainerCallback

    class Recorder(TrainerCallback):
        def __init__(self):
            self.logs: list[dict] = []
            self.samples: list[list[str]] = []

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            placeholder = getattr(model, "image_token_id", None) or model.config.image_token_id

            def hook(module, args, kwargs):
                if module.training:
                    self.samples.append(sample_hashes(kwargs, placeholder, pad))

            self.handle = model.register_forward_pre_hook(hook, with_kwargs=True)

        def on_train_end(self, args, state, control, **kwargs):
            self.handle.remove()

        def on_step_end(self, args, state, control, **kwargs):
            if stop_at is not None and state.global_step >= stop_at:
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kwargs):
            if "loss" in logs:
                self.logs.append(dict(logs))

    return Recorder()


def step_budget(steps: int):
    """llavakit's TimeBudget class with a clock that counts optimiser steps: a budget (of any
    seconds) is used up by `steps` steps, evenly, so the budgeted schedule and the stop happen
    exactly as they would on a machine where every step takes the same time."""
    from llavakit.train.callbacks import TimeBudget

    class StepBudget(TimeBudget):
        begun = 0

        def elapsed(self) -> float:
            # The schedule reads this after a step's update, as a clock would then show the
            # time of the steps begun so far.
            return self.seconds * self.begun / steps

        def on_step_begin(self, args, state, control, **kwargs):
            self.begun += 1

        def on_step_end(self, args, state, control, **kwargs):
            if self.begun >= steps:
                control.should_training_stop = True
                self.stopped = True

    return StepBudget


def held_out_loss(model, processor, config, max_length: int) -> float:
    """Token-mean loss over the held-out records (full logits, the LM's own loss)."""
    import torch

    from llavakit.conversation import IGNORE_INDEX
    from llavakit.data.dataset import Collator, LlavaDataset, load_entries

    entries, _ = load_entries(config, progress=False)
    dataset = LlavaDataset(entries, processor, max_length)
    collate = Collator(processor.pad_token_id)
    total, tokens = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(dataset), 16):
            batch = collate([dataset[i] for i in range(start, min(start + 16, len(dataset)))])
            n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            total += float(model(**batch).loss) * n
            tokens += n
    return total / tokens


def save_weights(model, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, path)


def max_relative(values: list[float], reference: list[float]) -> float:
    pairs = list(zip(values, reference, strict=True))
    return max(abs(a - b) / max(abs(b), 1e-12) for a, b in pairs)


def weights_gap(weights: Path, reference: Path, init: Path) -> float:
    """|w - w_ref| / |w_ref - w_init| over all weights (safetensors files): how far apart two
    runs ended, against how far the reference moved from where both started."""
    from safetensors.torch import load_file

    weights, ref, init = load_file(weights), load_file(reference), load_file(init)
    apart = sum(float((weights[k] - ref[k]).pow(2).sum()) for k in ref)
    moved = sum(float((ref[k] - init[k]).pow(2).sum()) for k in ref)
    return math.sqrt(apart / moved)
