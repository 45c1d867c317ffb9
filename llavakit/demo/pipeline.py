"""`llavakit demo`: every stage of the LLaVA and LLaVAR papers on the embedded world, on a CPU.

world -> data generation (LLaVA teacher data, stage-1 captions, LLaVAR OCR data) -> stage 0
(tokenizer, CLIP, LLM: the "pretrained" parts; llavakit's shipped stand-ins, or trained in the
run) -> stage 1 align -> stage 2 instruct ->
evaluation of both stages -> a sample chat -> report. Each step's result is cached under a key
made of its settings and its inputs' keys, so a rerun reuses finished steps and `--fresh`
starts over.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from llavakit.demo.files import remove
from llavakit.demo.llavar import make_conversations
from llavakit.demo.sizes import DemoSizes
from llavakit.demo.stage0 import TEMPLATE, make_stage0
from llavakit.demo.stand_ins import (
    checked_manifest,
    install_stand_ins,
    manifest_key,
    stand_ins_folder,
)
from llavakit.files import write_text_atomic

STATE_FILE = "steps.json"


@dataclass
class StepCache:
    """Runs a step unless a finished run with the same key is recorded."""

    root: Path
    fresh: bool = False
    state: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] = print

    def __post_init__(self) -> None:
        path = self.root / STATE_FILE
        if path.is_file() and not self.fresh:
            self.state = json.loads(path.read_text())

    def run(self, name: str, inputs: dict[str, Any], work: Callable[[], dict]) -> dict:
        key = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()
        done = self.state.get(name)
        if done and done["key"] == key:
            self.log(f"[{name}] reused ({done['seconds']:.0f} s when run)")
            return done["result"] | {"key": key}
        self.log(f"[{name}] running ...")
        start = time.perf_counter()
        result = work()
        seconds = time.perf_counter() - start
        self.state[name] = {"key": key, "seconds": seconds, "result": result}
        write_text_atomic(self.root / STATE_FILE, json.dumps(self.state, indent=1, default=str))
        self.log(f"[{name}] done in {seconds:.1f} s")
        return result | {"key": key}

    def seconds(self) -> dict[str, float]:
        return {name: round(step["seconds"], 1) for name, step in self.state.items()}


# ---- steps -------------------------------------------------------------------------------------
def make_world(out: Path, sizes: DemoSizes) -> dict:
    """The world; its eval split avoids every training image of the stage-0 stand-ins."""
    from llavakit.demo.stand_ins import excluded_content
    from llavakit.world import generate_world
    from llavakit.world.generate import default_workers

    summary = generate_world(
        out / "world",
        sizes.n_scenes,
        sizes.n_text_images,
        seed=sizes.seed,
        small_text_fraction=sizes.small_text_fraction,
        exclude=excluded_content(sizes),
        progress=True,
        workers=default_workers(),
    )
    return {"counts": summary.counts}


def make_data(out: Path, sizes: DemoSizes, with_llavar: bool = True) -> dict:
    """Stage-1 captions, LLaVA teacher data for scenes, and LLaVAR OCR data for text images."""
    from llavakit.datagen.coco import load_coco_contexts
    from llavakit.datagen.llava import generate
    from llavakit.datagen.pretrain import PretrainOptions, run_pretrain_datagen
    from llavakit.world import SymbolicTeacher

    world, data = out / "world", out / "data"
    # The generators resume from what they find; a rerun of this step means new inputs.
    remove(data)
    data.mkdir(parents=True)
    run_pretrain_datagen(
        PretrainOptions(
            captions=world / "train" / "captions.json",
            out=data / "pretrain.json",
            images=world / "images",
            seed=sizes.seed,
        )
    )
    _one_caption_per_image(data / "pretrain.json", sizes)
    contexts = load_coco_contexts(
        world / "train" / "instances.json", world / "train" / "captions.json"
    ).contexts
    scenes = [c for c in contexts if c["file_name"].startswith("scene_")]
    summary = generate(
        scenes, SymbolicTeacher(), data / "instruct.json", seed=sizes.seed, progress=True
    )
    from llavakit.world import load_split
    from llavakit.world.vqa import write_vqa

    write_vqa(load_split(world, "train"), data / "vqa.json", sizes.seed, sizes.vqa_questions)
    result = {"instruct": summary.text()}
    if with_llavar:
        from llavakit.demo.llavar import make_noisy_data

        result |= make_noisy_data(out, sizes)
    result["counts"] = {
        path.stem: len(json.loads(path.read_text())) for path in sorted(data.glob("*.json"))
    }
    return result


def _one_caption_per_image(path: Path, sizes: DemoSizes) -> None:
    """Stage 1 sees each image once (as LLaVA's 595K pairs do), with a seeded caption choice."""
    rng = random.Random(sizes.seed)
    by_image: dict[str, list[dict]] = {}
    for record in json.loads(path.read_text()):
        by_image.setdefault(record["image"], []).append(record)
    path.write_text(json.dumps([rng.choice(records) for records in by_image.values()]))


def stage_sources(sizes: DemoSizes, text_rich: bool = True) -> tuple[list[str], list[str]]:
    """The data files of stage 1 and stage 2. `text_rich` adds LLaVAR's: its noisy OCR records
    to both stages, its OCR-grounded conversations to stage 2. The short-answer VQA records join
    stage 2 only with `sizes.stage2_vqa` (see its note for why it is off by default)."""
    stage1 = ["pretrain"] + (["noisy"] if text_rich else [])
    stage2 = ["instruct"] + (["vqa"] if sizes.stage2_vqa else [])
    stage2 += ["llavar", "noisy"] if text_rich else []
    return stage1, stage2


def stage_recipe(
    out: Path,
    sizes: DemoSizes,
    stage: str,
    tag: str,
    sources: list[str],
    init_from=None,
    highres: bool = False,
):
    """One stage's recipe; `highres` adds LLaVAR's high-resolution branch (a 4 x 4 grid of
    crops read by a copy of the tower through cross-attention)."""
    from llavakit.config import (
        DataConfig,
        DataSource,
        HighresSettings,
        ModelConfig,
        RecipeConfig,
        TrainConfig,
    )

    align = stage == "align"
    model = ModelConfig(
        vision_tower=str(out / "stage0" / "clip"),
        language_model=str(out / "stage0" / "llm"),
        tokenizer=str(out / "stage0" / "llm"),
        projector_type="mlp2x_gelu",
        image_aspect_ratio="pad",
        template=TEMPLATE,
        max_length=sizes.max_length,
        highres=HighresSettings(grid=4) if highres else None,
    )
    data = DataConfig(
        train=[DataSource(path=str(out / "data" / f"{name}.json")) for name in sources],
        image_folder=str(out / "world" / "images"),
        group_by_modality_length=not align,
    )
    train = TrainConfig(
        stage=stage,
        output_dir=str(out / tag),
        init_from=init_from,
        epochs=sizes.stage1_epochs if align else sizes.stage2_epochs,
        per_device_batch_size=sizes.batch_size,
        learning_rate=sizes.stage1_lr if align else sizes.stage2_lr,
        time_budget_s=sizes.stage1_budget_s if align else sizes.stage2_budget_s,
        tune_vision_tower=sizes.tune_vision_tower and not align,
        vision_lr=sizes.vision_lr,
        warmup_ratio=0.03,
        lr_scheduler="cosine",
        precision=sizes.precision,
        logging_steps=5,
        packing=True,
        save_steps=100_000,
        resume=False,
        seed=sizes.seed,
    )
    return RecipeConfig(model=model, data=data, train=train)


def train_stage(
    out: Path,
    sizes: DemoSizes,
    stage: str,
    tag: str,
    sources: list[str],
    init_from=None,
    highres: bool = False,
    curve: bool = True,
) -> dict:
    import shutil

    from llavakit.train.run import train

    shutil.rmtree(out / tag, ignore_errors=True)
    scorer = accuracy_curve(out, sizes, init_from) if stage == "instruct" and curve else None
    recipe = stage_recipe(out, sizes, stage, tag, sources, init_from, highres)
    folder = train(recipe, callbacks=[scorer] if scorer else [])
    history = json.loads((folder / "loss_history.json").read_text())
    metadata = json.loads((folder / "config.json").read_text()).get("metadata", {})
    return {
        "checkpoint": str(folder),
        "loss": history,
        "stopped_by_budget": metadata.get("stopped_by_time_budget", False),
        "curve": scorer.points if scorer else [],
    }


def accuracy_curve(out: Path, sizes: DemoSizes, init_from: str | None):
    """Held-out accuracy every `curve_every_s` seconds of stage 2 (None when switched off)."""
    if not sizes.curve_every_s or init_from is None:
        return None
    from llavakit.demo.curve import AccuracyCurve, curve_questions
    from llavakit.model.io import load_checkpoint

    questions = [
        json.loads(line) for line in benchmark_questions(out, sizes).read_text().splitlines()
    ]
    # train() builds its own model; the stage-1 checkpoint has the same tokenizer and images.
    _, processor = load_checkpoint(init_from)
    return AccuracyCurve(
        curve_questions(questions, sizes.curve_per_category),
        out / "world" / "images",
        processor,
        sizes.curve_every_s,
    )


def evaluate(out: Path, sizes: DemoSizes, checkpoint: str, tag: str) -> dict:
    from llavakit.demo.report import interval95
    from llavakit.eval.answer import AnswerSettings, answer_questions
    from llavakit.eval.tasks.world import score_world
    from llavakit.infer.engine import Engine

    questions_path = benchmark_questions(out, sizes)
    questions = [json.loads(line) for line in questions_path.read_text().splitlines()]
    answers = out / "eval" / f"answers_{tag}.jsonl"
    answers.unlink(missing_ok=True)
    engine = Engine.load(checkpoint, device="cpu")
    answer_questions(
        engine,
        questions,
        out / "world" / "images",
        answers,
        AnswerSettings(batch_size=32, max_new_tokens=96),
        model_id=tag,
    )
    result = score_world(questions_path, answers)
    (out / "eval" / f"results_{tag}.json").write_text(
        json.dumps({k: v for k, v in result.items() if k != "items"}, indent=1)
    )
    metrics = result["metrics"]
    scores: dict[str, list[float]] = {}
    for item in result["items"]:
        scores.setdefault(item["category"], []).append(item["score"])
    return {
        "accuracy": {c: metrics[c] / 100 for c in result["n_questions_by_category"]},
        "interval": {c: interval95(scores[c]) for c in result["n_questions_by_category"]},
        "n_questions": result["n_questions_by_category"],
    }


def benchmark_questions(out: Path, sizes: DemoSizes) -> Path:
    """The held-out benchmark, `eval_per_category` questions per category (deterministic)."""
    from llavakit.world import build_benchmark, load_split

    path = out / "eval" / "questions.jsonl"
    questions = build_benchmark(load_split(out / "world", "eval"), seed=sizes.seed)
    kept, seen = [], {}
    for question in questions:
        seen[question.category] = seen.get(question.category, 0) + 1
        if not sizes.eval_per_category or seen[question.category] <= sizes.eval_per_category:
            kept.append(question.to_json())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(q) + "\n" for q in kept))
    return path


def sample_chat(out: Path, checkpoint: str) -> dict:
    from llavakit.image import load_image
    from llavakit.infer.engine import Engine, Request, SamplingParams
    from llavakit.world import load_split

    engine = Engine.load(checkpoint, device="cpu")
    split = load_split(out / "world", "eval")
    scene = next(image for image in split.images if image.is_scene)
    text = next((image for image in split.images if not image.is_scene), scene)
    turns = []
    for image, question in (
        (scene, "Describe the image in detail."),
        (scene, "How many objects are in the image?"),
        (text, "What is written in the image?"),
    ):
        pixels = load_image(out / "world" / "images" / image.file_name)
        request = Request(
            [{"role": "user", "content": question}], [pixels], SamplingParams(max_new_tokens=96)
        )
        turns.append(
            {
                "image": image.file_name,
                "question": question,
                "answer": engine.complete(request).text,
            }
        )
    return {"chat": turns}


# ---- the whole demo ----------------------------------------------------------------------------
def run_demo(
    out: str | Path,
    sizes: DemoSizes,
    fresh: bool = False,
    ablation: str | Sequence[str] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Run (or reuse) every step and write report.json, report.md and plots to `out`.

    `ablation` names one or more of demo/ablations.py's; each adds its own column to the report
    (a finished one is reused, so `--ablation llavar` then `--ablation llavar highres` trains
    only the second)."""
    from llavakit.demo.report import write_report
    from llavakit.precision import resolve_precision

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # Decided before any cache key is made, so a key names the precision that was used.
    sizes = replace(sizes, precision=resolve_precision(sizes.precision))
    steps = StepCache(out, fresh=fresh, log=log)
    s = sizes.to_dict()
    stand_ins = stand_ins_folder(sizes.stage0)
    if stand_ins is not None:
        checked_manifest(stand_ins)  # stale or broken stand-ins stop the run before any step
    # Names the stand-ins (None: stage 0 trains in the run) in every key that depends on them.
    stand_ins_key = manifest_key(stand_ins) if stand_ins else None
    world_sizes = {k: s[k] for k in ("n_scenes", "n_text_images", "small_text_fraction", "seed")}
    world_sizes["stand_ins"] = stand_ins_key
    world = steps.run("world", world_sizes, lambda: make_world(out, sizes))
    data = steps.run(
        "data",
        {"world": world["key"], "ocr_images": sizes.ocr_images, "seed": sizes.seed},
        lambda: make_data(out, sizes),
    )
    if stand_ins is None:
        stage0 = steps.run(
            "stage0", {"data": data["key"], "sizes": s}, lambda: make_stage0(out, sizes)
        )
    else:
        stage0 = steps.run(
            "stage0",
            {"world": world["key"], "stand_ins": stand_ins_key, "sizes": s},
            lambda: install_stand_ins(stand_ins, out, sizes),
        )
    stage1_sources, stage2_sources = stage_sources(sizes)
    stage1 = steps.run(
        "stage1",
        {"stage0": stage0["key"], "sizes": s},
        lambda: train_stage(out, sizes, "align", "stage1", stage1_sources),
    )
    llavar = steps.run(
        "llavar_conversations",
        {"stage1": stage1["key"], "data": data["key"], "images": sizes.llavar_conversations},
        lambda: make_conversations(out, sizes, stage1["checkpoint"], stage1["key"][:16]),
    )
    stage2 = steps.run(
        "stage2",
        {"stage1": stage1["key"], "llavar": llavar["key"], "sizes": s},
        lambda: train_stage(out, sizes, "instruct", "model", stage2_sources, stage1["checkpoint"]),
    )
    eval1 = steps.run(
        "eval_stage1",
        {"stage1": stage1["key"], "sizes": s},
        lambda: evaluate(out, sizes, stage1["checkpoint"], "stage1"),
    )
    eval2 = steps.run(
        "eval_stage2",
        {"stage2": stage2["key"], "sizes": s},
        lambda: evaluate(out, sizes, stage2["checkpoint"], "stage2"),
    )
    chat = steps.run(
        "chat", {"stage2": stage2["key"]}, lambda: sample_chat(out, stage2["checkpoint"])
    )
    extra: dict[str, Any] = {}
    from llavakit.demo.ablations import run_ablation

    for name in [ablation] if isinstance(ablation, str) else ablation or []:
        extra.setdefault("ablation", {}).update(run_ablation(name, out, sizes, steps, stage0))
    report = {
        "accuracy": eval2["accuracy"],
        "accuracy_stage1": eval1["accuracy"],
        "interval": eval2["interval"],
        "n_questions": eval2["n_questions"],
        "seconds": steps.seconds(),
        "total_seconds": round(sum(steps.seconds().values()), 1),
        "data": data["counts"] | {"llavar": llavar["llavar_records"]},
        "stage0": stage0,
        "loss": {"stage1": stage1["loss"], "stage2": stage2["loss"]},
        "curve": demo_time_curve(stage2.get("curve", []), steps.seconds()),
        "chat": chat["chat"],
        "sizes": s,
        "checkpoint": stage2["checkpoint"],
        **extra,
    }
    write_report(out, report)
    return report


BEFORE_STAGE2 = ("world", "data", "stage0", "stage1", "llavar_conversations")


def demo_time_curve(points: list[dict], seconds: dict[str, float]) -> list[dict]:
    """Stage-2 curve points with `demo_seconds`: every step before stage 2 plus training so far."""
    before = sum(seconds.get(step, 0.0) for step in BEFORE_STAGE2)
    return [point | {"demo_seconds": round(before + point["train_seconds"], 1)} for point in points]
