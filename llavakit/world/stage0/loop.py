"""The small training loop shared by the stage-0 trainers (CLIP and the language model).

Stage 0 must fit a laptop-sized time budget, so the loop stops at whichever comes first, a
step count or a wall-clock budget, and the learning-rate schedule (linear warmup, cosine decay)
follows the *progress* towards that stop. A run cut short by its budget therefore still ends
on a fully decayed learning rate instead of halfway down the cosine.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class LoopConfig:
    """How long and how fast one stage-0 model trains."""

    steps: int
    """Maximum number of optimiser steps."""
    peak_lr: float
    """Learning rate reached at the end of warmup."""
    warmup_fraction: float = 0.05
    """Share of the run spent ramping the learning rate up linearly from zero."""
    min_lr_fraction: float = 0.1
    """The cosine decays to this fraction of `peak_lr` rather than to zero."""
    weight_decay: float = 0.05
    """AdamW weight decay, applied to matrices only (not to norms, biases or scalars)."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global norm."""
    time_budget_s: float | None = None
    """Stop after this many seconds even if `steps` is not reached. Runs that hit the budget
    take a different number of steps from machine to machine, so they are not bit-reproducible."""
    progress: bool = True
    """Show a tqdm progress bar."""
    description: str = "train"
    """Label of the progress bar."""

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ValueError(f"time_budget_s must be positive or None, got {self.time_budget_s}")


@dataclass
class LoopResult:
    """What happened during a run: the loss curve and why it stopped."""

    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    stopped_by_budget: bool = False

    @property
    def steps(self) -> int:
        return len(self.losses)

    def metrics(self) -> dict:
        """The run's part of a stage-0 model's metrics (the model adds its own evaluations)."""
        return {
            "steps": self.steps,
            "seconds": round(self.seconds, 2),
            "stopped_by_budget": self.stopped_by_budget,
            "loss_first": self.losses[0],
            "loss_final": mean_of_tail(self.losses),
            "losses": self.losses,
        }


def autocast(precision: str):
    """The forward pass's context: bfloat16 autocast for "bf16" (weights stay float32; about
    twice as fast on CPUs with native bf16, far slower without: see llavakit/precision.py),
    nothing for "fp32"."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def save_stage0(out_dir, metrics: dict, *parts) -> None:
    """Save a stage-0 model folder: each of `parts` (model, tokenizer, processor) with its own
    `save_pretrained`, and the metrics beside them in stage0_metrics.json."""
    import json
    from pathlib import Path

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for part in parts:
        part.save_pretrained(out_dir)
    (out_dir / "stage0_metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")


def lr_at(progress: float, config: LoopConfig) -> float:
    """Learning rate at `progress` in [0, 1]: linear warmup, then cosine to the floor."""
    if config.warmup_fraction > 0 and progress < config.warmup_fraction:
        return config.peak_lr * max(progress, 1e-3) / config.warmup_fraction
    span = max(1.0 - config.warmup_fraction, 1e-9)
    decay = min(1.0, (progress - config.warmup_fraction) / span)
    floor = config.min_lr_fraction
    return config.peak_lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * decay)))


def make_adamw(model: torch.nn.Module, config: LoopConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only, as is usual for transformers."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    decayed = [p for p in trainable if p.ndim >= 2]
    undecayed = [p for p in trainable if p.ndim < 2]
    groups = [
        {"params": decayed, "weight_decay": config.weight_decay},
        {"params": undecayed, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.peak_lr, betas=(0.9, 0.98), eps=1e-6)


def run_loop(
    model: torch.nn.Module,
    compute_loss: Callable[[int, float], torch.Tensor],
    config: LoopConfig,
    after_step: Callable[[], None] | None = None,
    extra: torch.nn.Module | None = None,
) -> LoopResult:
    """Train `model` with AdamW; `compute_loss(step, progress)` builds a batch and returns its
    loss (`progress` in [0, 1]: the share of steps or of the time budget spent, whichever is more).

    `after_step` runs after every optimiser update (CLIP uses it to clamp its temperature).
    `extra` holds further trained modules that are not part of the saved model (CLIP's patch
    probes).
    """
    from tqdm.auto import tqdm

    trained = model if extra is None else torch.nn.ModuleList([model, extra])
    optimizer = make_adamw(trained, config)
    result = LoopResult()
    trained.train()
    start = time.perf_counter()
    bar = tqdm(
        total=config.steps, desc=config.description, disable=not config.progress, leave=False
    )
    with bar:
        for step in range(config.steps):
            elapsed = time.perf_counter() - start
            progress = step / config.steps
            if config.time_budget_s is not None:
                if elapsed >= config.time_budget_s:
                    result.stopped_by_budget = True
                    break
                progress = max(progress, elapsed / config.time_budget_s)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(progress, config)
            loss = compute_loss(step, progress)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"{config.description}: loss became {loss.item()} at step {step}"
                )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained.parameters(), config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if after_step is not None:
                after_step()
            result.losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{result.losses[-1]:.3f}")
    result.seconds = time.perf_counter() - start
    model.eval()
    return result


@contextlib.contextmanager
def seeded_and_threaded(seed: int, threads: int | None) -> Iterator[None]:
    """Seed torch's global RNG (model initialisation draws from it) and set the thread count,
    restoring both afterwards so the caller's RNG stream and settings are untouched."""
    previous_threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(previous_threads)


def mean_of_tail(values: list[float], fraction: float = 0.1) -> float:
    """Mean of the last `fraction` of a loss curve: a steadier "final loss" than the last step."""
    if not values:
        return float("nan")
    count = max(1, int(len(values) * fraction))
    return sum(values[-count:]) / count
