"""Stage-1 (feature alignment) throughput with cached vision features against computing them.

Stage 1 trains only the projector: the tower is frozen, so its selected-layer features for an
image never change. `data.feature_cache` computes them once into sharded safetensors and feeds
them instead of pixels; this measures what that buys per training step, and what filling the
cache costs once.

Sizes (`plain` template, max length 256, batch 16, random weights, world scenes with their
captions): `--sizes bench` (default) is CLIP 64 px / patch 8 / width 128 / 4 layers with a Llama
of width 192 / 4 layers; `--sizes demo` is the demo's stage-0 folders that the tiny CPU recipes
load (CLIP 96 px / patch 12 / width 128 / 4 layers; Llama width 128 / 4 layers). Each run is its
own process; runs alternate and repeat; throughput is measured in process CPU time on one thread
(see bench/train_throughput.py for why).

    python bench/stage1_cache.py [--steps 30] [--repeats 3] [--images 640] [--sizes demo]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from child_process import report, run_child
from train_throughput import StepClock, write_start_checkpoint

BATCH = 16
MAX_LENGTH = 256
SEED = 0
CONFIGS = ("pixels", "cached")


MODEL_SIZES = {
    "bench": {"image_size": 64, "patch_size": 8, "llm_width": 192},
    "demo": {"image_size": 96, "patch_size": 12, "llm_width": 128},
}


def prepare(workdir: Path, n_images: int, sizes: str) -> None:
    """World scenes with captions as a stage-1 caption file, tiny models, a start checkpoint."""
    from llavakit.world.scenes import render_scene

    rng = random.Random(SEED)
    images = workdir / "images"
    images.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n_images):
        image, annotation = render_scene(rng, i, f"{i}.png")
        image.save(images / f"{i}.png")
        caption = rng.choice(annotation.captions)
        records.append(
            {
                "id": f"p{i}",
                "image": f"{i}.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nDescribe the image briefly."},
                    {"from": "gpt", "value": caption},
                ],
            }
        )
    (workdir / "pretrain.json").write_text(json.dumps(records))
    corpus = [r["conversations"][1]["value"] for r in records] * 3
    write_start_checkpoint(workdir, corpus, "plain", MAX_LENGTH, SEED, **MODEL_SIZES[sizes])


def recipe_for(workdir: Path, name: str, total_steps: int):
    from llavakit.config import DataConfig, DataSource, ModelConfig, RecipeConfig, TrainConfig

    return RecipeConfig(
        model=ModelConfig(template="plain", max_length=MAX_LENGTH),
        data=DataConfig(
            train=[DataSource(path=str(workdir / "pretrain.json"))],
            image_folder=str(workdir / "images"),
            feature_cache=str(workdir / "cache") if name == "cached" else None,
        ),
        train=TrainConfig(
            stage="align",
            init_from=str(workdir / "init"),
            output_dir=str(workdir / "runs" / name),
            max_steps=total_steps,
            per_device_batch_size=BATCH,
            learning_rate=1e-3,
            warmup_ratio=0.0,
            lr_scheduler="constant",
            logging_steps=1,
            save_steps=100_000,
            resume=False,
            seed=SEED,
        ),
    )


def fill_cache(workdir: Path) -> dict:
    """Fill a fresh cache for every image once; CPU seconds per image."""
    import shutil

    from llavakit.data.feature_cache import FeatureCache, fill_feature_cache
    from llavakit.model.io import load_checkpoint

    shutil.rmtree(workdir / "cache", ignore_errors=True)
    model, processor = load_checkpoint(workdir / "init")
    paths = sorted((workdir / "images").glob("*.png"))
    start = time.process_time()
    cache = FeatureCache.for_model(workdir / "cache", model.vision_tower, processor)
    filled = fill_feature_cache(cache, paths, processor, model.vision_tower, progress=False)
    seconds = time.process_time() - start
    size = sum(p.stat().st_size for p in cache.folder.iterdir())
    return {"images": filled, "seconds": seconds, "megabytes": size / 2**20}


def run_one(workdir: Path, name: str, steps: int, warmup: int) -> dict:
    from llavakit.train.run import train

    clock = StepClock()
    folder = train(recipe_for(workdir, name, steps + warmup), callbacks=[clock.callback])
    losses = [p["loss"] for p in json.loads((folder / "loss_history.json").read_text())]
    (_, cpu_start), (_, cpu_end) = clock.ends[warmup - 1], clock.ends[-1]
    return {
        "config": name,
        "samples_per_s": BATCH * steps / (cpu_end - cpu_start),
        "final_loss": statistics.mean(losses[-5:]),
    }


def summarise(results: list[dict], fill: dict, n_images: int) -> str:
    def median(name):
        return statistics.median(r["samples_per_s"] for r in results if r["config"] == name)

    def spread(name):
        values = [r["samples_per_s"] for r in results if r["config"] == name]
        return (max(values) - min(values)) / 2

    def loss(name):
        return statistics.median(r["final_loss"] for r in results if r["config"] == name)

    base = median("pixels")
    fill_rate = fill["images"] / fill["seconds"]
    lines = [
        f"| stage 1 ({n_images} images) | samples/s | vs pixels | epoch s | final loss |",
        "|---|---|---|---|---|",
    ]
    for name in CONFIGS:
        rate = median(name)
        epoch = n_images / rate
        lines.append(
            f"| {name} | {rate:.1f} ± {spread(name):.1f} | {rate / base:.2f}x | {epoch:.1f} | "
            f"{loss(name):.3f} |"
        )
    lines.append(
        f"| filling the cache once | {fill_rate:.1f} images/s | | {fill['seconds']:.1f} | "
        f"{fill['megabytes']:.1f} MB on disk |"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--sizes", choices=sorted(MODEL_SIZES), default="bench")
    parser.add_argument("--workdir", type=Path, help="keep data/models here (default: temp)")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # child process: one configuration
    args = parser.parse_args()
    if args.run:
        import torch

        torch.set_num_threads(1)
        if args.run == "fill":
            report(fill_cache(args.workdir))
        else:
            report(run_one(args.workdir, args.run, args.steps, args.warmup))
        return
    with tempfile.TemporaryDirectory() as temporary:
        workdir = args.workdir or Path(temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        if not (workdir / "init").is_dir():
            prepare(workdir, args.images, args.sizes)

        def child(name: str) -> dict:
            options = ["--workdir", str(workdir)]
            options += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
            return run_child(__file__, name, options)

        fill = child("fill")
        results = []
        for repeat in range(args.repeats):
            for name in CONFIGS:
                results.append(child(name))
                print(f"[{repeat + 1}/{args.repeats}] {results[-1]}", file=sys.stderr)
        print(summarise(results, fill, args.images))


if __name__ == "__main__":
    main()
