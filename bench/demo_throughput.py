"""Training throughput of every stage of `llavakit demo`, before and after its CPU speed options.

One process builds a small world and runs each training stage of the demo twice, for a fixed
number of optimiser steps: "before" in float32 with the llavakit speed options that the demo
switches on switched off, "after" exactly as the demo trains. Steps are what the demo's time
budget buys, so the table shows steps/s and tokens/s per stage and their after/before ratio.

Rows (each at `DemoSizes.DEFAULT`'s sizes, random initial weights, nothing downloaded):

- stage 0 LM: the world's tiny `LlamaForCausalLM` (DemoSizes lm_width, lm_layers, lm_heads),
  trained by the demo's own `train_world_lm` (lm_batch_size windows of lm_seq_len tokens of
  captions and conversations). Before: fp32; after: the demo's precision (below).
- stage 0 CLIP: the world's tiny CLIP (DemoSizes image_size, patch_size, clip_width,
  clip_layers), trained by
  the demo's own `train_world_clip` (batch 32, train_clip's default; contrastive loss plus the
  patch-label probes). Before: fp32; after: the demo's precision.
- stage 1: the demo's stage-1 recipe (`llavakit.demo.pipeline.stage_recipe`, stage `align`:
  projector trained, tower and LM frozen, batch 32, max length 384) through `llavakit.train.run
  .train`, from the stage-0 folders the stage-0 "after" rows just wrote.
- stage 2: the demo's stage-2 recipe (`instruct`: projector and LM trained, the tower tuned at
  `vision_lr`), from the stage-1 "after" checkpoint.

Before, for stages 1-2: `precision: fp32`, `packing: false` (one right-padded row per sample),
`trained_logits_only: false` (vocabulary logits at every position), and
`group_by_modality_length: false` (the demo groups in stage 2 only). After: the recipe as the
demo builds it (the demo's precision, packing into rows of max_length, logits at trained
positions only, chunked by `loss_chunk_tokens`, grouping in stage 2). `torch_compile` is off in
the demo, so in both.

Precision: "before" is always fp32. "After" is `DemoSizes.precision` as `run_demo` resolves it
on this CPU ("auto": bf16 autocast where the CPU runs bf16 natively, fp32 where torch would
emulate it; llavakit/precision.py); `--precision bf16` (or fp32) forces it. Where it resolves
to fp32, the stage-0 rows' two configurations are the same and their ratio shows only noise.

Both configurations of every row differ from the demo only in what a benchmark needs: a fixed
step count (warm-up + timed steps) instead of epochs and wall-clock caps (`*_budget_s`), a
world of a few hundred scenes, outputs under the work folder, stage-0 models trained one at a
time (the demo trains the CLIP in a second process beside the LM), no held-out accuracy curve
during stage 2, and the scene data only: stage 1 trains on the world's captions
(`pretrain.json`), stage 2 on the teacher's conversations (`instruct.json`); the demo adds
LLaVAR's OCR records, whose PP-OCRv4 pass would take minutes.

Columns:

- steps/s: optimiser steps per second over the timed steps (from the end of the last warm-up
  step to the end of the last timed step). Stages 1-2 have 32 samples per step either way
  (packing changes the rows, not the samples); the stage-0 LM lm_batch_size windows, the CLIP 32 pairs.
- tokens/s: tokens the model read in those steps (trained and context tokens alike; padding
  excluded), per second. Stage 0 LM: input ids, lm_batch_size x lm_seq_len per step (windows are always full).
  Stage 0 CLIP: per pair, the image's patches plus its CLS token (8 x 8 + 1 = 65) and the
  caption's tokens (attention mask; the batch's padding left out). Stages 1-2: the language
  model's input ids that are not padding, image placeholder tokens included (64 per image), as
  `bench/train_throughput.py` counts them (attention mask when padded, ids other than the pad
  id when packed); the tower's own patch tokens are not counted again.
- after/before: the after row's tokens/s over the before row's (and steps/s in brackets; they
  differ only where the two runs' steps hold different samples, as stage 2's grouping makes
  them).

Timing is wall-clock by default; `--clock cpu` uses the process's CPU time instead, which other
jobs on a shared machine do not inflate (meaningful with `--threads 1`; see
bench/train_throughput.py). Rows run one after another in this process, "before" first; the
warm-up steps absorb first-call costs (oneDNN kernel choice, allocator growth).

    python bench/demo_throughput.py                  # 20 timed steps after 3 warm-up, per row
    python bench/demo_throughput.py --threads 1 --clock cpu --json demo_throughput.json
    python bench/demo_throughput.py --quick          # 2 timed steps after 1: checks the script
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

from train_throughput import StepClock, count_tokens

STAGES = ("stage 0 LM", "stage 0 CLIP", "stage 1", "stage 2")
CONFIGS = ("before", "after")
BEFORE_TRAIN = {"precision": "fp32", "packing": False, "trained_logits_only": False}
"""The demo's stage 1-2 speed options, switched off for "before" (grouping: see recipe_for)."""


# ---- the world, its data and the stage-0 tokenizer -------------------------------------------
def bench_sizes(n_scenes: int, n_text_images: int, steps: int):
    """The demo's default sizes with a small world, `steps` stage-0 steps and no time caps."""
    from llavakit.demo.sizes import DEFAULT

    return dataclasses.replace(
        DEFAULT,
        n_scenes=n_scenes,
        n_text_images=n_text_images,
        clip_steps=steps,
        lm_steps=steps,
        clip_budget_s=None,
        lm_budget_s=None,
        stage1_budget_s=None,
        stage2_budget_s=None,
        curve_every_s=None,
    )


def prepare(out: Path, sizes) -> None:
    """World, stage-1 captions and teacher conversations (the demo's own steps, without the
    LLaVAR OCR data), and the stage-0 tokenizer as `make_stage0` trains it."""
    from llavakit.demo.pipeline import make_data, make_world

    if not (out / "data" / "instruct.json").is_file():
        make_world(out, sizes)
        make_data(out, sizes, with_llavar=False)
    if not (out / "stage0" / "tokenizer").is_dir():
        from llavakit.demo.stage0 import language_corpus
        from llavakit.world.stage0 import train_tokenizer

        corpus = language_corpus(out, sizes)
        train_tokenizer(
            corpus.captions + corpus.rendered, out / "stage0" / "tokenizer", sizes.vocab_size
        )


# ---- measuring -----------------------------------------------------------------------------
@contextlib.contextmanager
def optimizer_steps(clock: StepClock):
    """Record wall and CPU time after every optimiser step into `clock.ends` (stage 0's loop
    has no callbacks; its AdamW steps once per training step)."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    def hook(optimizer, args, kwargs):
        clock.ends.append((time.perf_counter(), time.process_time()))

    handle = register_optimizer_step_post_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def counted_forward(model_class, count, counts: list[tuple[int, int]]):
    """Append `count(model, kwargs)` = (tokens, row slots) for every forward of `model_class`."""
    original = model_class.forward

    @functools.wraps(original)
    def forward(self, *args, **kwargs):
        counts.append(count(self, kwargs))
        return original(self, *args, **kwargs)

    with mock.patch.object(model_class, "forward", forward):
        yield


def lm_tokens(model, kwargs) -> tuple[int, int]:
    ids = kwargs["input_ids"]
    return ids.numel(), ids.numel()


def clip_tokens(model, kwargs) -> tuple[int, int]:
    vision = model.config.vision_config
    per_image = (vision.image_size // vision.patch_size) ** 2 + 1  # patches + CLS
    images = kwargs["pixel_values"].shape[0] * per_image
    mask = kwargs["attention_mask"]
    return images + int(mask.sum()), images + mask.numel()


def rates(clock: StepClock, counts: list, warmup: int, steps: int, which: str) -> dict:
    """steps/s and tokens/s over the timed steps (after `warmup` untimed ones)."""
    if len(clock.ends) < warmup + steps or len(counts) < warmup + steps:
        raise RuntimeError(
            f"expected {warmup + steps} steps, saw {len(clock.ends)} (forward calls: "
            f"{len(counts)}); the data may be too small for a step"
        )
    column = 1 if which == "cpu" else 0
    seconds = clock.ends[warmup + steps - 1][column] - clock.ends[warmup - 1][column]
    tokens = sum(real for real, _ in counts[warmup : warmup + steps])
    return {
        "steps_per_s": steps / seconds,
        "tokens_per_s": tokens / seconds,
        "tokens_per_step": tokens / steps,
        "seconds": seconds,
    }


# ---- the rows ------------------------------------------------------------------------------
def run_stage0_lm(out: Path, sizes, threads: int) -> tuple[StepClock, list]:
    """The demo's `train_world_lm` on its corpus, in this process."""
    from transformers import LlamaForCausalLM

    from llavakit.demo.stage0 import language_corpus, train_world_lm

    corpus = language_corpus(out, sizes)
    clock, counts = StepClock(), []
    with optimizer_steps(clock), counted_forward(LlamaForCausalLM, lm_tokens, counts):
        train_world_lm(out, sizes, threads, corpus)
    return clock, counts


def run_stage0_clip(out: Path, sizes, threads: int) -> tuple[StepClock, list]:
    """The demo's `train_world_clip`, in this process (the demo runs it beside the LM)."""
    from transformers import CLIPModel

    from llavakit.demo.stage0 import train_world_clip

    clock, counts = StepClock(), []
    with optimizer_steps(clock), counted_forward(CLIPModel, clip_tokens, counts):
        train_world_clip(out, sizes, threads)
    return clock, counts


def recipe_for(out: Path, sizes, stage: str, config: str, steps: int, init_from=None):
    """The demo's recipe for `stage` (stage_recipe, as train_stage builds it), with a fixed
    step count; "before" switches the demo's speed options off."""
    from llavakit.demo.pipeline import stage_recipe, stage_sources

    stage1_sources, stage2_sources = stage_sources(sizes, text_rich=False)
    sources = stage1_sources if stage == "align" else stage2_sources
    tag = f"{stage}_{config}"
    recipe = stage_recipe(out, sizes, stage, tag, sources, init_from)
    train = {"max_steps": steps, "time_budget_s": None}
    if config == "before":
        train |= BEFORE_TRAIN
        recipe.data = dataclasses.replace(recipe.data, group_by_modality_length=False)
    recipe.train = dataclasses.replace(recipe.train, **train)
    return recipe


def run_trainer_stage(recipe) -> tuple[StepClock, list, Path]:
    """One stage through `llavakit.train.run.train`, as the demo's train_stage calls it."""
    import shutil

    from transformers import AutoTokenizer, TrainerCallback

    from llavakit.train.run import train

    shutil.rmtree(recipe.train.output_dir, ignore_errors=True)  # as train_stage does
    pad = AutoTokenizer.from_pretrained(recipe.model.tokenizer).pad_token_id
    clock, counts = StepClock(), []

    class CountTokens(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            count_tokens(model, pad, counts)

    folder = train(recipe, callbacks=[CountTokens(), clock.callback])
    return clock, counts, folder


def describe(precision: str, recipe=None) -> str:
    """What a row's configuration switches on (for stages 1-2, read from its recipe)."""
    parts = ["bf16 autocast" if precision == "bf16" else precision]
    if recipe is None:
        return parts[0]
    t = recipe.train
    parts.append("packed" if t.packing else "padded rows")
    parts.append("trained logits only" if t.trained_logits_only else "all logits")
    if recipe.data.group_by_modality_length:
        parts.append("grouped")
    if t.torch_compile:
        parts.append("compiled")
    return ", ".join(parts)


def demo_precision(sizes) -> str:
    """The precision the demo trains in on this CPU: `run_demo` resolves "auto" before any step
    (llavakit/precision.py); where that module is absent, the sizes name it outright."""
    try:
        from llavakit.precision import resolve_precision
    except ImportError:
        return sizes.precision
    return resolve_precision(sizes.precision)


def run_all(out: Path, args, after: str) -> list[dict]:
    """Every row; `after` is the after rows' precision."""
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    total = args.warmup + args.steps
    sizes = bench_sizes(args.scenes, args.text_images, total)
    precisions = {"before": "fp32", "after": after}
    prepare(out, sizes)
    results = []

    def record(stage, config, label, clock, counts, started):
        row = {"stage": stage, "config": config, "configuration": f"{config}: {label}"}
        row |= rates(clock, counts, args.warmup, args.steps, args.clock)
        row["threads"] = torch.get_num_threads()
        results.append(row)
        print(
            f"{stage}, {row['configuration']}: {row['steps_per_s']:.2f} steps/s, "
            f"{row['tokens_per_s']:.0f} tokens/s (row: {time.perf_counter() - started:.0f} s)",
            file=sys.stderr,
        )

    for stage, run in (("stage 0 LM", run_stage0_lm), ("stage 0 CLIP", run_stage0_clip)):
        for config in CONFIGS:
            started = time.perf_counter()
            row_sizes = dataclasses.replace(sizes, precision=precisions[config])
            clock, counts = run(out, row_sizes, threads)
            record(stage, config, describe(precisions[config]), clock, counts, started)
    stage1 = None
    for stage, name in (("stage 1", "align"), ("stage 2", "instruct")):
        for config in CONFIGS:
            started = time.perf_counter()
            row_sizes = dataclasses.replace(sizes, precision=precisions[config])
            recipe = recipe_for(out, row_sizes, name, config, total, init_from=stage1)
            clock, counts, folder = run_trainer_stage(recipe)
            label = describe(recipe.train.precision, recipe)
            record(stage, config, label, clock, counts, started)
            if name == "align" and config == "after":
                stage1 = str(folder)  # stage 2 starts from stage 1 as the demo trains it
    return results


# ---- the table -----------------------------------------------------------------------------
def machine(args, after: str) -> str:
    """CPU model, torch's vector capability, BF16 instructions (Linux), threads and clock."""
    import torch

    name, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
    bf16 = [flag for flag in ("avx512_bf16", "amx_bf16") if flag in flags] or ["none listed"]
    chosen = "the demo's choice here" if args.precision == "demo" else "forced by --precision"
    return (
        f"CPU: {name}; torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}); "
        f"bf16 CPU flags: {', '.join(bf16)}; after-rows precision {after} "
        f"({chosen}); torch threads {torch.get_num_threads()}; {args.clock} clock; "
        f"{args.steps} timed steps after {args.warmup} warm-up per row"
    )


def summarise(results: list[dict]) -> str:
    lines = [
        "| stage | configuration | steps/s | tokens/s | after/before tokens/s (steps/s) |",
        "|---|---|---|---|---|",
    ]
    for stage in STAGES:
        rows = {r["config"]: r for r in results if r["stage"] == stage}
        for config in CONFIGS:
            row = rows[config]
            ratio = ""
            if config == "after":
                before = rows["before"]
                tokens = row["tokens_per_s"] / before["tokens_per_s"]
                steps = row["steps_per_s"] / before["steps_per_s"]
                ratio = f"**{tokens:.2f}x** ({steps:.2f}x)"
            lines.append(
                f"| {stage} | {row['configuration']} | {row['steps_per_s']:.2f} | "
                f"{row['tokens_per_s']:.0f} | {ratio} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (>= 1)")
    parser.add_argument("--scenes", type=int, default=400, help="world scenes (90%% train)")
    parser.add_argument("--text-images", type=int, default=100, help="world text images")
    parser.add_argument(
        "--threads", type=int, help="torch threads for every row (default: torch's default)"
    )
    parser.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall", help="wall or process CPU time"
    )
    parser.add_argument(
        "--precision",
        choices=("demo", "fp32", "bf16"),
        default="demo",
        help="the after rows' precision: the demo's (its 'auto' resolved for this CPU) or forced",
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 timed steps after 1, a smaller world"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep world/data/models here (default: temp); a world found there is reused",
    )
    parser.add_argument("--json", type=Path, help="also write every row's results here")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup, args.scenes, args.text_images = 2, 1, 80, 20
    if args.steps < 1 or args.warmup < 1:
        parser.error("--steps and --warmup must be at least 1")
    from llavakit.demo.sizes import DEFAULT

    after = demo_precision(DEFAULT) if args.precision == "demo" else args.precision
    with tempfile.TemporaryDirectory() as temporary:
        out = args.workdir or Path(temporary)
        out.mkdir(parents=True, exist_ok=True)
        results = run_all(out, args, after)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(machine(args, after))
    print()
    print(summarise(results))


if __name__ == "__main__":
    main()
