"""The demo's stage-0 stand-ins: the world's CLIP and LLM, pretrained once and shipped.

LLaVA starts from a CLIP and a Vicuna that arrive pretrained: the paper's two stages only
align and instruction-tune them. The demo's stand-ins for those two models used to be trained
inside the demo's ten minutes, 100 seconds each on one core, which the measurements reject
(README, "the demo, measured"): after 100 s the world's LLM cannot even copy the noun of a
question into its answer, and what it gains from more steps it gains slowly. So the stand-ins
are pretrained for much longer, once, by `llavakit world stand-ins` (`make stand-ins`), and the
demo copies them in, as a user's run copies in a CLIP and a Vicuna it downloaded.

They are pretrained on a world of their own (the pretraining seed below), the world's stand-in
for web data. A demo's eval split keeps out every image of that world's training split (by
content digest, recorded in the manifest), so held-out stays held out.

A stand-ins folder holds `tokenizer/`, `llm/` and `clip/` (standard Hugging Face folders) and
`manifest.json`: the settings and metrics of the build, the fingerprint of the world it was
built for, and the content digests of its training images. A change to the world's generator
changes the fingerprint; the demo then refuses the stale stand-ins with the command that
rebuilds them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from llavakit.demo.sizes import DemoSizes

SHIPPED = Path(__file__).with_name("stand_ins")
"""The stand-ins that ship with llavakit (package data)."""
PRETRAIN_SEED = 1_000_000
"""Seed of the stand-ins' pretraining world (demo worlds use small seeds)."""
MANIFEST = "manifest.json"
PARTS = {"tokenizer": "tokenizer.json", "llm": "config.json", "clip": "config.json"}
"""The folders of a stand-ins build, each with the file that shows it is complete."""
_FINGERPRINT_WORLD = {"n_scenes": 16, "n_text_images": 0}


class StandInsError(ValueError):
    """Stand-ins that are missing, unreadable or built for another world."""


def stand_ins_folder(choice: str) -> Path | None:
    """The folder `DemoSizes.stage0` names: None for "train" (stage 0 trains in the run)."""
    if choice == "train":
        return None
    return SHIPPED if choice == "shipped" else Path(choice)


@functools.cache
def world_fingerprint() -> str:
    """A digest of what the world's generator writes today.

    A small world of scenes drawn with the pretraining seed (each one's background and objects,
    captions and benchmark questions), the words, kinds and colours of text-rich images, and a
    conversation rendered with the demo's template. Stand-ins whose manifest names another
    fingerprint learnt a different world or language. Nothing here depends on the machine:
    text-rich images are not drawn (their layout follows the fonts a machine has installed),
    and objects enter without their pixel boxes (which a Pillow release could move by a pixel).
    Computed once per process: the demo checks its stand-ins before its first step and again
    when it installs them."""
    from llavakit.conversation import render_text
    from llavakit.demo.stage0 import TEMPLATE
    from llavakit.world import build_benchmark, generate_world, load_split
    from llavakit.world.vocabulary import TEXT_COLOURS, TEXT_KINDS, WORDS

    lines = [repr(WORDS), repr(TEXT_KINDS), repr(sorted(TEXT_COLOURS))]
    with tempfile.TemporaryDirectory() as tmp:
        generate_world(tmp, seed=PRETRAIN_SEED, reuse=False, progress=False, **_FINGERPRINT_WORLD)
        for name in ("train", "eval"):
            split = load_split(tmp, name)
            for image in split.images:
                objects = sorted((o.category, o.color, o.size) for o in image.objects)
                lines += [repr((image.background, objects)), *image.captions]
            lines += [q.text + " -> " + repr(q.answer) for q in build_benchmark(split, seed=0)]
    messages = [{"role": "user", "content": "<image>\nq"}, {"role": "assistant", "content": "a"}]
    lines.append(render_text(TEMPLATE, messages)[0])
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def read_manifest(folder: Path) -> dict:
    """The manifest of a stand-ins folder, with every part present, or a StandInsError."""
    path = folder / MANIFEST
    if not path.is_file():
        raise StandInsError(
            f"{folder}: no {MANIFEST}: not a stand-ins folder (build one with "
            "`llavakit world stand-ins --out DIR`, or run the demo with --stage0 train)"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise StandInsError(f"{path}: not valid JSON ({error})") from None
    for key in ("fingerprint", "train_content", "metrics"):
        if key not in manifest:
            raise StandInsError(f"{path}: missing {key!r}")
    for part, marker in PARTS.items():
        if not (folder / part / marker).is_file():
            raise StandInsError(f"{folder / part}: missing or incomplete (no {marker})")
    return manifest


def checked_manifest(folder: Path) -> dict:
    """`read_manifest`, refusing stand-ins built for a world other than today's."""
    manifest = read_manifest(folder)
    today = world_fingerprint()
    if manifest["fingerprint"] != today:
        raise StandInsError(
            f"{folder}: stand-ins built for world fingerprint {manifest['fingerprint']}, but "
            f"this llavakit's world is {today} (its generator or language changed): rebuild "
            "them with `make stand-ins`, or run the demo with --stage0 train"
        )
    return manifest


def manifest_key(folder: Path) -> str:
    """A digest of the manifest: names the stand-ins in the demo's step cache keys."""
    read_manifest(folder)
    return hashlib.sha256((folder / MANIFEST).read_bytes()).hexdigest()[:16]


def install_stand_ins(folder: Path, out: Path, sizes: DemoSizes) -> dict:
    """Copy the stand-ins into `out/stage0` (the demo step for stage 0), checking that they
    fit this world and the demo's tower resolution, and measure the LLM on the held-out
    benchmark in words. Returns the stage-0 summary for the report."""
    from llavakit.demo.stage0 import benchmark_in_words

    manifest = checked_manifest(folder)
    clip = json.loads((folder / "clip" / "config.json").read_text())["vision_config"]
    if (clip["image_size"], clip["patch_size"]) != (sizes.image_size, sizes.patch_size):
        raise StandInsError(
            f"{folder / 'clip'}: a {clip['image_size']} px tower with {clip['patch_size']} px "
            f"patches, but the demo's sizes ask for {sizes.image_size} px with "
            f"{sizes.patch_size} px: rebuild the stand-ins at these sizes"
        )
    stage0 = out / "stage0"
    shutil.rmtree(stage0, ignore_errors=True)
    for part in PARTS:
        shutil.copytree(folder / part, stage0 / part)
    llm = dict(manifest["metrics"]["llm"])
    llm["benchmark_in_words"] = benchmark_in_words(out, sizes)
    return {
        "source": str(folder),
        "built": manifest.get("built"),
        "build_minutes": manifest.get("minutes"),
        "clip": manifest["metrics"]["clip"],
        "llm": llm,
    }


def excluded_content(sizes: DemoSizes) -> list[str]:
    """Content digests a demo world's eval split must avoid: the stand-ins' training images."""
    folder = stand_ins_folder(sizes.stage0)
    return [] if folder is None else read_manifest(folder)["train_content"]


def build_stand_ins(
    folder: str | Path, sizes: DemoSizes, minutes: float | None, work: str | Path | None = None
) -> dict:
    """Pretrain the stand-ins for `minutes` each (CLIP and LLM side by side) on the pretraining
    world drawn at `sizes`, and write them with their manifest to `folder`.

    `work` keeps the pretraining world, data and logs (default: a temporary folder). The models
    are the demo's stage 0 (demo/stage0.py) at `sizes`' architecture, given a time budget
    instead of the demo's (None: `sizes`' own step counts and budgets, as the tests use)."""
    from llavakit.demo.pipeline import make_data, make_world
    from llavakit.demo.stage0 import make_stage0
    from llavakit.world import load_split

    folder = Path(folder)
    build = replace(sizes, seed=PRETRAIN_SEED, stage0="train")
    if minutes is not None:
        seconds = minutes * 60
        build = replace(
            build,
            lm_steps=10**9,
            clip_steps=10**9,
            lm_budget_s=seconds,
            clip_budget_s=seconds,
        )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(work) if work is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        started = time.time()
        make_world(root, build)
        make_data(root, build)
        metrics = make_stage0(root, build)
        train = load_split(root / "world", "train")
        folder.mkdir(parents=True, exist_ok=True)
        for part in PARTS:
            shutil.rmtree(folder / part, ignore_errors=True)
            shutil.copytree(root / "stage0" / part, folder / part)
        for stray in (folder / "llm" / "stage0_metrics.json", folder / "clip" / "stage0_metrics.json"):  # fmt: skip
            stray.unlink(missing_ok=True)  # their per-step losses stay in the work folder
        manifest = {
            "fingerprint": world_fingerprint(),
            "built": time.strftime("%Y-%m-%d"),
            "minutes": minutes,
            "build_seconds": round(time.time() - started),
            "sizes": build.to_dict(),
            "metrics": metrics,
            "train_content": sorted(image.content_digest() for image in train.images),
        }
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest
