"""Generate a whole world on disk: images, train/eval annotations and a manifest.

Layout of `out_dir`:
    images/scene_000001.png ...   every image of both splits
    train/{instances,captions,texts}.json
    eval/{instances,captions,texts}.json
    world.json                    the settings it was made with, and counts

Every image is drawn from its own random stream, named by (seed, split, kind, index), so an
image does not depend on how many others were asked for. Eval images whose content equals a
train image's (possible for one-word signs), or one of `exclude` (the content digests of another
world's training images, such as the stage-0 stand-ins' pretraining world), are redrawn, so eval
never repeats anything a model has trained on.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from llavakit.files import write_text_atomic
from llavakit.world.annotations import WorldImage, WorldSplit, load_split, write_split
from llavakit.world.scenes import SceneConfig, render_scene
from llavakit.world.text_images import (
    DEFAULT_FONT_DIRS,
    FontBook,
    TextImageConfig,
    render_text_image,
)

MANIFEST = "world.json"
FORMAT_VERSION = 1
_MAX_REDRAWS = 1000


@dataclass(frozen=True)
class WorldConfig:
    """Everything that decides a world's content."""

    n_scenes: int = 1000
    """Scene images over both splits."""
    n_text_images: int = 300
    """Text-rich images over both splits."""
    seed: int = 0
    eval_fraction: float = 0.1
    """Share of each kind of image held out for evaluation."""
    scene_size: int = 96
    text_size: int = 192
    small_text_fraction: float = 0.0
    """Share of text-rich images rendered with deliberately small text."""
    excluded: str = ""
    """Digest of the `exclude` set the eval split keeps out ("" for none): part of the world's
    identity, so a world made against other excluded images is not reused."""

    def __post_init__(self) -> None:
        if self.n_scenes < 0 or self.n_text_images < 0:
            raise ValueError("image counts must not be negative")
        if self.n_scenes + self.n_text_images == 0:
            raise ValueError("a world needs at least one image")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if not 0.0 <= self.small_text_fraction <= 1.0:
            raise ValueError(
                f"small_text_fraction must be in [0, 1], got {self.small_text_fraction}"
            )

    def eval_count(self, total: int) -> int:
        return round(total * self.eval_fraction)


@dataclass
class WorldSummary:
    """What `generate_world` made."""

    out_dir: Path
    config: WorldConfig
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    """{"train": {"scene": n, "text": m}, "eval": {...}}."""
    fonts: list[str] = field(default_factory=list)
    reused: bool = False
    """True when an identical world was already on disk and nothing was redrawn."""


def generate_world(
    out_dir: str | Path,
    n_scenes: int = 1000,
    n_text_images: int = 300,
    seed: int = 0,
    eval_fraction: float = 0.1,
    *,
    scene_size: int = 96,
    text_size: int = 192,
    small_text_fraction: float = 0.0,
    font_dirs: tuple[str, ...] = DEFAULT_FONT_DIRS,
    exclude: Collection[str] = (),
    reuse: bool = True,
    progress: bool = True,
) -> WorldSummary:
    """Draw a world into `out_dir`; with `reuse`, an identical finished world is kept as is.

    `exclude` holds content digests (`WorldImage.content_digest`) that no eval image may have."""
    excluded = frozenset(exclude)
    config = WorldConfig(
        n_scenes=n_scenes,
        n_text_images=n_text_images,
        seed=seed,
        eval_fraction=eval_fraction,
        scene_size=scene_size,
        text_size=text_size,
        small_text_fraction=small_text_fraction,
        excluded=_digest_of(excluded),
    )
    out_dir = Path(out_dir)
    if reuse:
        existing = _finished_world(out_dir, config)
        if existing is not None:
            return existing
    fonts = FontBook(font_dirs)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)  # the world is unfinished until rewritten

    plan = _plan(config)
    bar = tqdm(total=len(plan), desc="world", unit="img", disable=not progress)
    splits: dict[str, list[WorldImage]] = {"train": [], "eval": []}
    train_content: set[tuple] = set()
    for image_id, (split, kind, index, small) in enumerate(plan, start=1):
        for attempt in range(_MAX_REDRAWS):
            rng = random.Random(f"llavakit-world:{config.seed}:{split}:{kind}:{index}:{attempt}")
            file_name = f"{kind}_{image_id:06d}.png"
            if kind == "scene":
                image, annotation = render_scene(
                    rng, image_id, file_name, SceneConfig(size=config.scene_size)
                )
            else:
                text_config = TextImageConfig(size=config.text_size, small_text=small)
                image, annotation = render_text_image(rng, image_id, file_name, fonts, text_config)
            if split == "train" or (
                annotation.content_key() not in train_content
                and annotation.content_digest() not in excluded
            ):
                break
        else:
            raise RuntimeError(
                f"could not draw an eval {kind} unlike every train (and excluded) image"
            )
        if split == "train":
            train_content.add(annotation.content_key())
        image.save(image_dir / file_name)
        splits[split].append(annotation)
        bar.update()
    bar.close()

    wanted = {image.file_name for images in splits.values() for image in images}
    for stale in image_dir.glob("*.png"):
        if stale.name not in wanted and stale.name.startswith(("scene_", "text_")):
            stale.unlink()
    for name, images in splits.items():
        write_split(WorldSplit(name, images), out_dir / name)

    summary = WorldSummary(
        out_dir=out_dir,
        config=config,
        counts={name: _count_kinds(images) for name, images in splits.items()},
        fonts=fonts.names,
    )
    manifest = {
        "format_version": FORMAT_VERSION,
        "config": asdict(config),
        "counts": summary.counts,
        "fonts": summary.fonts,
    }
    write_text_atomic(out_dir / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return summary


def _digest_of(digests: frozenset[str]) -> str:
    """One short digest naming a set of content digests ("" for the empty set)."""
    if not digests:
        return ""
    return hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()[:16]


def _plan(config: WorldConfig) -> list[tuple[str, str, int, bool]]:
    """(split, kind, index within split and kind, small text) for every image, in id order."""
    plan = []
    for split in ("train", "eval"):
        for kind, total in (("scene", config.n_scenes), ("text", config.n_text_images)):
            n_eval = config.eval_count(total)
            count = n_eval if split == "eval" else total - n_eval
            n_small = round(count * config.small_text_fraction)
            for index in range(count):
                plan.append((split, kind, index, kind == "text" and index >= count - n_small))
    return plan


def _count_kinds(images: list[WorldImage]) -> dict[str, int]:
    scenes = sum(1 for image in images if image.is_scene)
    return {"scene": scenes, "text": len(images) - scenes}


def _finished_world(out_dir: Path, config: WorldConfig) -> WorldSummary | None:
    """The summary of an identical, complete world already in `out_dir`, else None."""
    manifest_path = out_dir / MANIFEST
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    if manifest.get("format_version") != FORMAT_VERSION or manifest.get("config") != asdict(config):
        return None
    try:
        splits = [load_split(out_dir, name) for name in ("train", "eval")]
    except (FileNotFoundError, ValueError):
        return None
    for split in splits:
        for image in split.images:
            if not (out_dir / "images" / image.file_name).is_file():
                return None
    return WorldSummary(
        out_dir=out_dir,
        config=config,
        counts=manifest.get("counts", {}),
        fonts=manifest.get("fonts", []),
        reused=True,
    )
