"""Reading small text: base LLaVA vs AnyRes vs LLaVAR's high-res cross-attention, same budget.

The LLaVAR paper's table shows a 896 px high-resolution encoder (a 4x4 grid of CLIP crops read
through cross-attention) beating the same model at the tower's own 224/336 px on text VQA. This
is that comparison in miniature, on the embedded synthetic world with small text (about 10 px on
a 192 px image, illegible once shrunk to the 64 px stage-0 CLIP). Like a real CLIP, which reads
large text but not small text shrunk to 224 px, the stage-0 CLIP is pretrained on world images
with normal-size text (about 8-10 px at its 64 px input) as well as on the task's images:

    base     the image padded and shrunk to the tower's 64 px: 64 image tokens
    anyres   LLaVA-NeXT: a base view plus up to 3x3 tiles of 64 px (192 px): ~660 image tokens
    highres  LLaVAR: the base view's 64 tokens, plus cross-attention in every decoder layer to a
             3x3 grid of 64 px crops (192 px) encoded by a copy of the tower

Each variant trains the same two stages on the same reading records ("What is written on the
sign?" -> the first line, from the world's ground truth) for the same number of samples: stage 1
(projector, + cross-attention for highres) then stage 2 (+ the LLM). Reading accuracy on the
held-out images uses the world benchmark's contains-match scoring, answers come from the one
answer runner (`llavakit.eval.answer`). Stage 0 (tokenizer, CLIP, LLM) is trained here in about
two minutes, or reused from a demo run with `--stage0 DIR` (holding `clip/` and `llm/`).

    python bench/highres_reading.py --out runs/highres_reading            # about 10 min, 2 cores
    python bench/highres_reading.py --out /tmp/hr_smoke --quick           # a minute, a smoke run

The numbers are small and noisy at this size; the point is the direction of the comparison.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

VARIANTS = ("base", "anyres", "highres")
TEMPLATE = "vicuna_v1"
QUESTION_FILE = "reading_questions.jsonl"


@dataclass(frozen=True)
class BenchSizes:
    """Everything that decides the run's cost."""

    text_images: int = 320
    """Text-rich world images (all small text); 10% are held out for evaluation."""
    clip_text_images: int = 320
    """Images with normal-size text that the stage-0 CLIP also learns from."""
    image_size: int = 64
    patch_size: int = 8
    clip_width: int = 64
    clip_layers: int = 3
    clip_steps: int = 160
    lm_width: int = 96
    lm_layers: int = 3
    lm_steps: int = 120
    grid: int = 3
    """High-res crops per side (and the largest AnyRes grid): 3 x 64 px = 192 px, the image."""
    stage1_epochs: float = 1.0
    stage2_epochs: float = 2.0
    batch_size: int = 16
    learning_rate: float = 2e-3
    seed: int = 0


QUICK = BenchSizes(
    text_images=60, clip_text_images=30, clip_width=32, clip_layers=2, clip_steps=10, lm_width=32, lm_layers=2,
    lm_steps=10, stage1_epochs=1.0, stage2_epochs=1.0, batch_size=8,
)  # fmt: skip


def make_world(folder: Path, n_images: int, seed: int, small_text: bool) -> Path:
    from llavakit.world import generate_world

    generate_world(
        folder,
        n_scenes=0,
        n_text_images=n_images,
        seed=seed,
        small_text_fraction=1.0 if small_text else 0.0,
        progress=False,
    )
    return folder


def reading_questions(world: Path, split: str, seed: int) -> list:
    from llavakit.world import load_split
    from llavakit.world.benchmark import build_benchmark

    questions = build_benchmark(load_split(world, split), seed)
    return [q for q in questions if q.category.startswith("reading")]


def write_records(world: Path, out: Path, seed: int) -> Path:
    """Stage 1 and 2 data: each training image's reading question with its true first line."""
    records = [
        {
            "id": q.question_id,
            "image": q.image,
            "conversations": [
                {"from": "human", "value": f"<image>\n{q.text}"},
                {"from": "gpt", "value": q.answer},
            ],
        }
        for q in reading_questions(world, "train", seed)
    ]
    path = out / "reading_train.json"
    path.write_text(json.dumps(records))
    return path


def make_stage0(world: Path, records: Path, out: Path, sizes: BenchSizes) -> Path:
    """Tokenizer, CLIP (on captions of normal- and small-text images) and LLM, as HF folders."""
    from llavakit.conversation import IMAGE_TOKEN, messages_from_llava, render_text
    from llavakit.world import load_split
    from llavakit.world.stage0 import train_clip, train_language_model, train_tokenizer

    stage0 = out / "stage0"
    normal = make_world(out / "clip_world", sizes.clip_text_images, sizes.seed + 1, False)
    pairs = [
        (folder / "images" / image.file_name, caption)
        for folder in (world, normal)
        for image in load_split(folder, "train").images
        for caption in image.captions
    ]
    random.Random(sizes.seed).shuffle(pairs)
    # The reading dialogues as the template renders them (text only: the image token removed),
    # trained on their replies, as the demo's stage 0 does.
    conversations = [
        [
            {**message, "content": message["content"].replace(IMAGE_TOKEN, "").strip()}
            for message in messages_from_llava(record["conversations"])
        ]
        for record in json.loads(records.read_text())
    ]
    captions = [caption for _, caption in pairs]
    rendered = [render_text(TEMPLATE, messages)[0] for messages in conversations]
    train_tokenizer(captions + rendered, stage0 / "tokenizer", vocab_size=800)
    train_clip(
        pairs,
        stage0 / "tokenizer",
        stage0 / "clip",
        image_size=sizes.image_size,
        patch_size=sizes.patch_size,
        hidden_size=sizes.clip_width,
        vision_layers=sizes.clip_layers,
        steps=sizes.clip_steps,
        seed=sizes.seed,
        progress=False,
        threads=None,
    )
    train_language_model(
        captions,
        stage0 / "tokenizer",
        stage0 / "llm",
        hidden_size=sizes.lm_width,
        layers=sizes.lm_layers,
        steps=sizes.lm_steps,
        seed=sizes.seed,
        progress=False,
        threads=None,
        conversations=conversations,
        template=TEMPLATE,
    )
    return stage0


def variant_model(variant: str, stage0: Path, sizes: BenchSizes):
    from llavakit.config import HighresSettings, ModelConfig

    model = ModelConfig(
        vision_tower=str(stage0 / "clip"),
        language_model=str(stage0 / "llm"),
        tokenizer=str(stage0 / "llm"),
        template=TEMPLATE,
        max_length=1024,
    )
    if variant == "anyres":
        grids = f"(1x1),...,({sizes.grid}x{sizes.grid})"
        return dataclasses.replace(model, image_aspect_ratio="anyres", image_grid_pinpoints=grids)
    if variant == "highres":
        return dataclasses.replace(model, highres=HighresSettings(grid=sizes.grid))
    return model


def train_variant(variant: str, stage0: Path, records: Path, world: Path, out: Path, sizes):
    """Stage 1 then stage 2; returns the final checkpoint and the last logged losses."""
    from llavakit.config import DataConfig, DataSource, RecipeConfig, TrainConfig
    from llavakit.train.run import train

    data = DataConfig(train=[DataSource(path=str(records))], image_folder=str(world / "images"))
    folder, losses = None, {}
    for stage, epochs in (("align", sizes.stage1_epochs), ("instruct", sizes.stage2_epochs)):
        output = out / variant / stage
        shutil.rmtree(output, ignore_errors=True)
        schedule = TrainConfig(
            stage=stage,
            output_dir=str(output),
            init_from=str(folder) if folder else None,
            epochs=epochs,
            per_device_batch_size=sizes.batch_size,
            learning_rate=sizes.learning_rate,
            warmup_ratio=0.03,
            logging_steps=5,
            save_steps=100_000,
            resume=False,
            seed=sizes.seed,
        )
        model = variant_model(variant, stage0, sizes)
        folder = train(RecipeConfig(model=model, data=data, train=schedule))
        history = json.loads((folder / "loss_history.json").read_text())
        losses[stage] = history[-1]["loss"] if history else float("nan")
    return folder, losses


def evaluate(checkpoint: Path, world: Path, questions: list, out: Path) -> dict:
    import llavakit
    from llavakit.eval.answer import AnswerSettings, answer_questions
    from llavakit.infer.engine import Engine
    from llavakit.world.benchmark import score_answer

    model, processor = llavakit.load(checkpoint)
    answers = out / "answers.jsonl"
    answers.unlink(missing_ok=True)
    rows = [{"question_id": q.question_id, "image": q.image, "text": q.text} for q in questions]
    settings = AnswerSettings(batch_size=8, max_new_tokens=12)
    answer_questions(Engine(model, processor), rows, world / "images", answers, settings)
    predicted = {r["question_id"]: r["text"] for r in map(json.loads, answers.open())}
    scores = [score_answer(q.category, q.answer, predicted[q.question_id]) for q in questions]
    first_words = [
        score_answer(q.category, q.answer.split()[0], predicted[q.question_id]) for q in questions
    ]
    sample = processor.encode(
        [{"role": "user", "content": "<image>\nread"}],
        [_first_image(world, questions)],
        add_generation_prompt=True,
    )
    return {
        "accuracy": sum(scores) / len(scores),
        "first_word": sum(first_words) / len(first_words),
        "n": len(scores),
        "image_tokens": sample.input_ids.count(processor.image_token_id),
        "crop_keys": _crop_keys(model),
    }


def _first_image(world: Path, questions: list):
    from llavakit.image import load_image

    return load_image(world / "images" / questions[0].image)


def _crop_keys(model) -> int:
    if model.highres is None:
        return 0
    return model.highres.crops_per_image * model.highres.encoder.num_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/highres_reading"))
    parser.add_argument("--stage0", type=Path, help="reuse a demo's stage0 folder (clip/, llm/)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument(
        "--epochs", nargs=2, type=float, metavar=("STAGE1", "STAGE2"), help="a larger budget"
    )
    args = parser.parse_args()
    sizes = QUICK if args.quick else BenchSizes()
    if args.epochs:
        sizes = dataclasses.replace(
            sizes, stage1_epochs=args.epochs[0], stage2_epochs=args.epochs[1]
        )
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    world = make_world(args.out / "world", sizes.text_images, sizes.seed, small_text=True)
    records = write_records(world, args.out, sizes.seed)
    stage0 = args.stage0 or make_stage0(world, records, args.out, sizes)
    print(f"world + stage 0: {time.perf_counter() - started:.0f} s")
    questions = reading_questions(world, "eval", sizes.seed)
    results = {}
    for variant in args.variants:
        begun = time.perf_counter()
        checkpoint, losses = train_variant(variant, stage0, records, world, args.out, sizes)
        trained = time.perf_counter() - begun
        results[variant] = evaluate(checkpoint, world, questions, args.out / variant)
        results[variant] |= {"train_s": trained, "loss": losses}
        print(f"{variant}: {results[variant]}")
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print_table(results, len(json.loads(records.read_text())), sizes)
    print(f"total: {time.perf_counter() - started:.0f} s")


def print_table(results: dict, n_train: int, sizes: BenchSizes) -> None:
    print(
        f"\nReading small text (~10 px on 192 px images), {n_train} training images, "
        f"{sizes.stage1_epochs:g} + {sizes.stage2_epochs:g} epochs each, "
        f"{next(iter(results.values()))['n']} held-out questions"
    )
    print(
        "| variant | image tokens | crop keys | train s | loss s1 / s2 | reading acc | first word |"
    )
    print("|---|---|---|---|---|---|---|")
    for variant, r in results.items():
        print(
            f"| {variant} | {r['image_tokens']} | {r['crop_keys']} | {r['train_s']:.0f} | "
            f"{r['loss']['align']:.2f} / {r['loss']['instruct']:.2f} | "
            f"{100 * r['accuracy']:.1f}% | {100 * r['first_word']:.1f}% |"
        )


if __name__ == "__main__":
    main()
