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
import os
import random
from collections.abc import Collection
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
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
    workers: int = 1,
) -> WorldSummary:
    """Draw a world into `out_dir`; with `reuse`, an identical finished world is kept as is.

    `exclude` holds content digests (`WorldImage.content_digest`) that no eval image may have.
    With `workers` > 1, that many processes draw the images (spawned: call it from under
    `if __name__ == "__main__":`, as the CLI does; worlds under 400 images are drawn here). Every
    image comes from its own random stream, so the world is the same for any number of workers."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
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
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)  # the world is unfinished until rewritten

    plan = _plan(config)
    drawer = _Drawer(config, font_dirs, image_dir, excluded)
    bar = tqdm(total=len(plan), desc="world", unit="img", disable=not progress)
    train_plan = [(i, task) for i, task in enumerate(plan, start=1) if task[0] == "train"]
    eval_plan = [(i, task) for i, task in enumerate(plan, start=1) if task[0] == "eval"]
    workers = 1 if len(plan) < _SERIAL_BELOW else workers
    with _pool(workers, drawer) as pool:
        # Eval images are checked against every train image, so the train split comes first.
        train = _draw_all(pool, drawer, train_plan, frozenset(), workers, bar)
        train_content = frozenset(image.content_key() for image in train)
        held_out = _draw_all(pool, drawer, eval_plan, train_content, workers, bar)
    splits = {"train": train, "eval": held_out}
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
        fonts=drawer.fonts,
    )
    manifest = {
        "format_version": FORMAT_VERSION,
        "config": asdict(config),
        "counts": summary.counts,
        "fonts": summary.fonts,
    }
    write_text_atomic(out_dir / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return summary


class _Drawer:
    """Draws and saves the images of a world; one lives in each drawing process."""

    def __init__(
        self, config: WorldConfig, font_dirs: tuple[str, ...], image_dir: Path, excluded: frozenset
    ):
        self.config = config
        self.font_dirs = font_dirs
        self.image_dir = image_dir
        self.excluded = excluded
        self._fonts: FontBook | None = None

    @property
    def fonts(self) -> list[str]:
        return self._font_book().names

    def _font_book(self) -> FontBook:
        if self._fonts is None:  # loaded where it is used, not pickled into each worker
            self._fonts = FontBook(self.font_dirs)
        return self._fonts

    def draw(self, image_id: int, task: tuple, train_content: Collection[tuple]) -> WorldImage:
        """Image `image_id` of `task` (split, kind, index, small), saved; an eval image equal
        to a train image in `train_content` or to an excluded one is redrawn."""
        split, kind, index, small = task
        config = self.config
        for attempt in range(_MAX_REDRAWS):
            rng = random.Random(f"llavakit-world:{config.seed}:{split}:{kind}:{index}:{attempt}")
            file_name = f"{kind}_{image_id:06d}.png"
            if kind == "scene":
                image, annotation = render_scene(
                    rng, image_id, file_name, SceneConfig(size=config.scene_size)
                )
            else:
                text_config = TextImageConfig(size=config.text_size, small_text=small)
                image, annotation = render_text_image(
                    rng, image_id, file_name, self._font_book(), text_config
                )
            if split == "train" or (
                annotation.content_key() not in train_content
                and annotation.content_digest() not in self.excluded
            ):
                image.save(self.image_dir / file_name)
                return annotation
        raise RuntimeError(f"could not draw an eval {kind} unlike every train (and excluded) image")

    def draw_chunk(self, chunk: list[tuple[int, tuple]], train_content) -> list[WorldImage]:
        return [self.draw(image_id, task, train_content) for image_id, task in chunk]


_WORKER_DRAWER: _Drawer | None = None
_SERIAL_BELOW = 400
"""Worlds with fewer images are drawn in this process: starting workers would cost more."""


def _init_worker(drawer: _Drawer) -> None:
    global _WORKER_DRAWER
    _WORKER_DRAWER = drawer


def _draw_chunk_in_worker(chunk: list[tuple[int, tuple]], train_content) -> list[WorldImage]:
    assert _WORKER_DRAWER is not None
    return _WORKER_DRAWER.draw_chunk(chunk, train_content)


def default_workers() -> int:
    """Drawing processes for a caller that can spawn them: one per core, at most 8."""
    return min(os.cpu_count() or 1, 8)


@contextmanager
def _pool(workers: int, drawer: _Drawer):
    """A process pool of `workers` drawers, or None to draw here."""
    if workers == 1:
        yield None
        return
    with ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(drawer,)
    ) as pool:
        yield pool


def _draw_all(pool, drawer: _Drawer, plan: list, train_content, workers: int, bar) -> list:
    """The annotations of `plan`'s images, in plan order, drawn by `pool` (or here)."""
    if not plan:
        return []
    # Chunks amortise sending `train_content` (every train image's key) to the workers.
    size = max(1, min(256, -(-len(plan) // (4 * workers))))
    chunks = [plan[start : start + size] for start in range(0, len(plan), size)]
    drawn: list[WorldImage] = []
    if pool is None:
        results = (drawer.draw_chunk(chunk, train_content) for chunk in chunks)
    else:
        results = pool.map(_draw_chunk_in_worker, chunks, [train_content] * len(chunks))
    for chunk_images in results:
        drawn += chunk_images
        bar.update(len(chunk_images))
    return drawn


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
