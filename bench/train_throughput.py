"""Stage-2 training throughput on CPU: llavakit against transformers' own LLaVA + Trainer.

Baseline: `LlavaForConditionalGeneration` holding the same weights (copied as the parity test
does), trained by transformers' `Trainer` on the same encoded samples with a pad-to-longest
collator, in random order. llavakit: `llavakit.train.run.train` with sequence packing and/or
modality-length grouping (and, always, logits at trained positions only). Same data, same
global batch, same optimiser settings, same seed.

The model has the tiny CPU recipe's sizes (CLIP 64 px / patch 8 / width 128 / 4 layers; Llama
width 192 / 4 layers, 2k vocabulary; max length 384) with random weights. The data is a mixture
shaped like LLaVA-1.5's 665K set (see mixture_record): mostly short VQA answers, some long
conversations and descriptions, a few long text-only chats.

Every configuration runs in its own process (so peak RSS is its own), configurations alternate,
and the whole round repeats; the table shows medians over repeats with the spread. Throughput
counts the steps after a warm-up. It is measured in the process's CPU time on one thread by
default, which other jobs on a shared machine do not inflate (wall-clock figures, which they
do, are shown beside it).

    python bench/train_throughput.py                 # default: 16 timed steps, 2 repeats
    python bench/train_throughput.py --steps 8 --repeats 1 --configs baseline packed+grouped
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from child_process import report, run_child

BATCH = 16
MAX_LENGTH = 384
LEARNING_RATE = 2e-4
SEED = 0
CONFIGS = {
    # name: (llavakit?, packing, grouping, extra train fields)
    "baseline": (False, False, False, {}),
    "llavakit padded": (True, False, False, {}),
    "llavakit grouped": (True, False, True, {}),
    "llavakit packed": (True, True, False, {}),
    "llavakit packed+grouped": (True, True, True, {}),
    "llavakit packed+grouped +ckpt": (True, True, True, {"gradient_checkpointing": True}),
}
DEFAULT_CONFIGS = list(CONFIGS)

WORDS = (
    "the a of and to in is it that this with for on as are be at by from or an which one all "
    "there their what so up out if about who get make can like time just him know take people "
    "into year your good some could them see other than then now look only come its over think "
    "also back after use two how our work first well way even new want because any these give "
    "day most us shape colour left right above below small large near far middle corner edge "
    "picture scene object background bright dark light round sharp pointed next between behind "
    "front top bottom side many few several each every both pair group row column line pattern"
).split()
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "black")
SHAPES = ("circle", "square", "triangle", "star", "heart", "cross", "diamond", "arrow")


# ---- a data set with a realistic length spread ---------------------------------------------
def sentence(rng: random.Random, low: int, high: int) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(low, high))]
    return " ".join(words).capitalize() + "."


def paragraph(rng: random.Random, n_words: int) -> str:
    parts, count = [], 0
    while count < n_words:
        parts.append(sentence(rng, 6, 16))
        count += len(parts[-1].split())
    return " ".join(parts)


def mixture_record(rng: random.Random, index: int, n_images: int) -> dict:
    """One record of a mixture shaped like LLaVA-1.5's 665K instruction data.

    70% academic VQA (VQAv2, GQA, OCR-VQA, RefCOCO...: one image, 1-8 questions with one-to-three
    word answers), 24% LLaVA-Instruct (multi-turn conversations, detailed descriptions, complex
    reasoning), 6% ShareGPT text-only chats, long and spread up to and past the length limit.
    """
    kind = rng.choices(("vqa", "conversation", "detail", "reasoning", "text"), (70, 12, 5, 7, 6))[0]
    if kind == "vqa":
        turns = [
            (
                f"What colour is the {rng.choice(SHAPES)}? {sentence(rng, 2, 8)}",
                " ".join(rng.choice(COLOURS + SHAPES) for _ in range(rng.randint(1, 3))),
            )
            for _ in range(rng.choice((1, 1, 1, 2, 2, 3)))
        ]
    elif kind == "conversation":
        turns = [
            (sentence(rng, 5, 12), paragraph(rng, rng.randint(8, 25)))
            for _ in range(rng.randint(2, 4))
        ]
    elif kind == "detail":
        turns = [("Describe the image in detail.", paragraph(rng, rng.randint(30, 70)))]
    elif kind == "reasoning":
        turns = [(sentence(rng, 8, 20), paragraph(rng, rng.randint(30, 80)))]
    else:
        turns = [
            (sentence(rng, 5, 25), paragraph(rng, rng.randint(10, 90)))
            for _ in range(rng.randint(1, 6))
        ]
    conversations = []
    for turn, (question, answer) in enumerate(turns):
        if turn == 0 and kind != "text":
            question = f"<image>\n{question}" if rng.random() < 0.5 else f"{question}\n<image>"
        conversations += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    record = {"id": f"{kind}-{index}", "conversations": conversations}
    if kind != "text":
        record["image"] = f"{rng.randrange(n_images)}.png"
    return record


def write_images(folder: Path, n: int, seed: int) -> None:
    from llavakit.world.scenes import render_scene

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for i in range(n):
        image, _ = render_scene(rng, i, f"{i}.png")
        image.save(folder / f"{i}.png")


def write_models(
    folder: Path,
    corpus: list[str],
    seed: int,
    image_size: int = 64,
    patch_size: int = 8,
    llm_width: int = 192,
) -> tuple[Path, Path]:
    """Random-weight CLIP tower (width 128, 4 layers) and 4-layer Llama, as HF folders.

    The defaults are this benchmark's; the demo's stage-0 folders (which the tiny CPU recipes
    load) are image_size=96, patch_size=12, llm_width=128.
    """
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    from llavakit.image_config import ImageProcessorConfig
    from llavakit.world.stage0.tokenizer import train_tokenizer

    torch.manual_seed(seed)
    llm_dir, clip_dir = folder / "llm", folder / "clip"
    tokenizer = train_tokenizer(corpus, llm_dir, vocab_size=2000)
    llm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=llm_width,
            intermediate_size=math.ceil(8 * llm_width / 3 / 32) * 32,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=2048,
            tie_word_embeddings=False,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    llm.save_pretrained(llm_dir)
    clip = CLIPVisionModel(
        CLIPVisionConfig(
            image_size=image_size,
            patch_size=patch_size,
            hidden_size=128,
            intermediate_size=512,
            num_hidden_layers=4,
            num_attention_heads=4,
            projection_dim=128,
        )
    )
    clip.save_pretrained(clip_dir)
    ImageProcessorConfig(size=image_size, crop_size=image_size).save_pretrained(clip_dir)
    return clip_dir, llm_dir


def prepare(workdir: Path, n_samples: int, n_images: int = 256) -> None:
    """Images, the mixture's records and a llavakit checkpoint both contenders start from."""
    from llavakit.conversation import get_template

    rng = random.Random(SEED)
    records = [mixture_record(rng, i, n_images) for i in range(n_samples)]
    (workdir / "mixture.json").write_text(json.dumps(records))
    write_images(workdir / "images", n_images, SEED)
    corpus = [turn["value"] for r in records for turn in r["conversations"]]
    # The template's system prompt, often enough to become whole-word tokens as in Llama's.
    system = get_template("vicuna_v1").system
    corpus += [f"{system} USER: Hello ASSISTANT: Hi</s>"] * 20
    write_start_checkpoint(workdir, corpus, "vicuna_v1", MAX_LENGTH, SEED)


def write_start_checkpoint(
    workdir: Path, corpus: list[str], template: str, max_length: int, seed: int, **sizes
) -> Path:
    """`write_models` (sizes: its keyword arguments) and the llavakit checkpoint built from them
    (a seeded projector), as `workdir/init`: the weights every contender starts from."""
    import torch

    from llavakit.config import ModelConfig
    from llavakit.model.io import build_model, save_checkpoint

    clip_dir, llm_dir = write_models(workdir, corpus, seed, **sizes)
    config = ModelConfig(
        vision_tower=str(clip_dir),
        language_model=str(llm_dir),
        template=template,
        max_length=max_length,
    )
    torch.manual_seed(seed)
    model, processor = build_model(config)
    save_checkpoint(model, processor, workdir / "init", copy_vision=True, copy_language_model=True)
    return workdir / "init"


# ---- one configuration, in its own process -------------------------------------------------
class StepClock:
    """Trainer callback: wall and process CPU time at the end of every optimiser step."""

    def __init__(self):
        from transformers import TrainerCallback

        clock = self

        class _Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                clock.ends.append((time.perf_counter(), time.process_time()))

        self.ends: list[tuple[float, float]] = []
        self.callback = _Callback()


def count_tokens(model, pad_token_id: int, counts: list[tuple[int, int]]) -> None:
    """Record (real tokens, row slots) of every forward call's batch."""

    def hook(module, args, kwargs):
        ids = kwargs["input_ids"]
        mask = kwargs.get("attention_mask")
        real = (
            int(mask.sum())
            if mask is not None and mask.dim() == 2
            else int((ids != pad_token_id).sum())
        )
        counts.append((real, ids.numel()))

    model.register_forward_pre_hook(hook, with_kwargs=True)


def recipe_for(workdir: Path, name: str, total_steps: int):
    from llavakit.config import DataConfig, DataSource, ModelConfig, RecipeConfig, TrainConfig

    _, packing, grouping, extra = CONFIGS[name]
    return RecipeConfig(
        model=ModelConfig(template="vicuna_v1", max_length=MAX_LENGTH),
        data=DataConfig(
            train=[DataSource(path=str(workdir / "mixture.json"))],
            image_folder=str(workdir / "images"),
            group_by_modality_length=grouping,
        ),
        train=TrainConfig(
            stage="instruct",
            init_from=str(workdir / "init"),
            output_dir=str(workdir / "runs" / name.replace(" ", "_")),
            max_steps=total_steps,
            per_device_batch_size=BATCH,
            learning_rate=LEARNING_RATE,
            warmup_ratio=0.0,
            lr_scheduler="constant",
            logging_steps=1,
            save_steps=100_000,
            resume=False,
            seed=SEED,
            packing=packing,
            **extra,
        ),
    )


def hf_llava_from(model, image_token_id: int):
    """transformers' LlavaForConditionalGeneration with our model's weights.

    transformers embeds the placeholder id itself, so it must lie inside the vocabulary: the
    caller passes one the text never uses.
    """
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    llm = model.language_model
    config = LlavaConfig(
        vision_config=model.vision_tower.encoder.config.to_dict(),
        text_config=llm.config.to_dict(),
        image_token_id=image_token_id,
        projector_hidden_act="gelu",
        vision_feature_layer=model.config.vision_select_layer,
        vision_feature_select_strategy="default",
    )
    hf = LlavaForConditionalGeneration(config)
    hf.model.vision_tower.load_state_dict(model.vision_tower.encoder.state_dict())
    hf.model.multi_modal_projector.linear_1.load_state_dict(model.projector[0].state_dict())
    hf.model.multi_modal_projector.linear_2.load_state_dict(model.projector[2].state_dict())
    hf.model.language_model.load_state_dict(llm.model.state_dict())
    hf.lm_head.load_state_dict(llm.lm_head.state_dict())
    hf.model.vision_tower.requires_grad_(False)  # stage 2: the tower stays frozen
    return hf


class PadToLongest:
    """The baseline's collator: right-pad, and the image placeholder as transformers' id."""

    def __init__(self, pad_token_id: int, ours: int, theirs: int):
        self.pad_token_id, self.ours, self.theirs = pad_token_id, ours, theirs

    def __call__(self, samples):
        from llavakit.data.collate import collate_samples

        batch = collate_samples(samples, self.pad_token_id)
        assert not (batch["input_ids"] == self.theirs).any(), "placeholder id used by the text"
        batch["input_ids"] = batch["input_ids"].masked_fill(
            batch["input_ids"] == self.ours, self.theirs
        )
        batch.pop("image_sizes", None)  # transformers' LLaVA would split features by it
        return batch


def run_baseline(recipe, clock: StepClock, counts: list) -> list[dict]:
    from transformers import Trainer, set_seed

    from llavakit.data.dataset import LlavaDataset, load_entries
    from llavakit.model.io import load_checkpoint
    from llavakit.train.run import training_arguments

    set_seed(recipe.train.seed)
    model, processor = load_checkpoint(recipe.train.init_from)
    hf = hf_llava_from(model, processor.tokenizer.unk_token_id)  # byte-level BPE never emits it
    count_tokens(hf, processor.pad_token_id, counts)
    entries, _ = load_entries(recipe.data, seed=recipe.train.seed)
    trainer = Trainer(
        model=hf,
        args=training_arguments(recipe, model),
        train_dataset=LlavaDataset(entries, processor, MAX_LENGTH),
        data_collator=PadToLongest(
            processor.pad_token_id, model.image_token_id, hf.config.image_token_id
        ),
        callbacks=[clock.callback],
    )
    trainer.train()
    return trainer.state.log_history


def run_llavakit(recipe, clock: StepClock, counts: list) -> list[dict]:
    from transformers import AutoTokenizer, TrainerCallback

    from llavakit.train.run import train

    pad_token_id = AutoTokenizer.from_pretrained(recipe.train.init_from).pad_token_id

    class HookModel(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            count_tokens(model, pad_token_id, counts)

    folder = train(recipe, callbacks=[HookModel(), clock.callback])
    return json.loads((folder / "loss_history.json").read_text())


def run_one(workdir: Path, name: str, steps: int, warmup: int) -> dict:
    clock, counts = StepClock(), []
    recipe = recipe_for(workdir, name, steps + warmup)
    runner = run_llavakit if CONFIGS[name][0] else run_baseline
    history = runner(recipe, clock, counts)
    losses = [h["loss"] for h in history if "loss" in h]
    (wall_start, cpu_start), (wall_end, cpu_end) = clock.ends[warmup - 1], clock.ends[-1]
    timed = counts[warmup : warmup + steps]
    real = sum(r for r, _ in timed)
    slots = sum(s for _, s in timed)
    return {
        "config": name,
        "samples_per_s": BATCH * steps / (cpu_end - cpu_start),
        "tokens_per_s": real / (cpu_end - cpu_start),
        "wall_tokens_per_s": real / (wall_end - wall_start),
        "padding": 1 - real / slots,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "final_loss": statistics.mean(losses[-5:]),
        "losses": losses,
    }


# ---- the table -----------------------------------------------------------------------------
def summarise(results: list[dict], names: list[str]) -> str:
    def median(name, key):
        return statistics.median(r[key] for r in results if r["config"] == name)

    def spread(name, key):
        values = [r[key] for r in results if r["config"] == name]
        return (max(values) - min(values)) / 2

    base = "baseline" if "baseline" in names else names[0]
    base_tokens = median(base, "tokens_per_s")
    base_wall = median(base, "wall_tokens_per_s")
    lines = [
        "| configuration | samples/s | non-pad tokens/s | vs baseline | wall tokens/s (vs) "
        "| padding | peak RSS MB | final loss |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        tokens = median(name, "tokens_per_s")
        wall = median(name, "wall_tokens_per_s")
        lines.append(
            f"| {name} | {median(name, 'samples_per_s'):.2f} | {tokens:.0f} ± "
            f"{spread(name, 'tokens_per_s'):.0f} | {tokens / base_tokens:.2f}x | "
            f"{wall:.0f} ({wall / base_wall:.2f}x) | "
            f"{median(name, 'padding'):.0%} | {median(name, 'peak_rss_mb'):.0f} | "
            f"{median(name, 'final_loss'):.3f} ± {spread(name, 'final_loss'):.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=16, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--samples", type=int, default=2000, help="records in the mixture")
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, choices=list(CONFIGS))
    parser.add_argument("--workdir", type=Path, help="keep data/models here (default: temp)")
    parser.add_argument("--json", type=Path, help="also write every run's results here")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per run (1: CPU time = work done)"
    )
    parser.add_argument("--run", help=argparse.SUPPRESS)  # child process: one configuration
    args = parser.parse_args()
    if args.run:
        import torch

        torch.set_num_threads(args.threads)
        report(run_one(args.workdir, args.run, args.steps, args.warmup))
        return
    with tempfile.TemporaryDirectory() as temporary:
        workdir = args.workdir or Path(temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        if not (workdir / "init").is_dir():
            prepare(workdir, args.samples)
        results = []
        for repeat in range(args.repeats):
            for name in args.configs:
                options = ["--workdir", str(workdir), "--threads", str(args.threads)]
                options += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
                results.append(run_child(__file__, name, options))
                r = results[-1]
                print(
                    f"[{repeat + 1}/{args.repeats}] {name}: {r['tokens_per_s']:.0f} tok/s, "
                    f"{r['samples_per_s']:.2f} samples/s, loss {r['final_loss']:.3f}",
                    file=sys.stderr,
                )
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
        print(summarise(results, args.configs))


if __name__ == "__main__":
    main()
