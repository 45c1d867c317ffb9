"""`llavakit datagen llavar cluster`: group images by CLIP features so a person can pick clusters.

LLaVAR clustered 50K LAION images into 100 groups on CLIP ViT-B/32 image features, looked at
them and kept the 14 text-rich ones (posters, covers, ads, infographics...), at most 52K images
each. Here: embeddings from any local CLIP folder (journaled per image, so an interrupted run
resumes and shards can embed in parallel), k-means from scikit-learn, and per cluster a contact
sheet (a grid of the images nearest its centre) plus a JSONL list of its images, capped, ready
for `noisy --list` or `conversations --list`.

With `--num-shards` a run only embeds its shard; an unsharded run afterwards finds every
embedding done and clusters them all.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from llavakit.datagen.journal import Journal, write_records
from llavakit.datagen.llavar.items import (
    ImageItem,
    Shard,
    gather_items,
    journal_file,
    read_journals,
)
from llavakit.datagen.llavar.ocr import MAX_PIXELS

_OUTPUT_NAME = re.compile(r"^cluster_\d{3,}\.(png|jsonl)$")


@dataclass
class ClusterOptions:
    """`llavakit datagen llavar cluster`."""

    out: Path
    """Output folder: assignments.json, cluster_NNN.png / cluster_NNN.jsonl, journal/."""
    clip: Path
    """Local CLIP folder (full CLIPModel or vision-only) giving the image embeddings."""
    k: int
    """Number of clusters (LLaVAR: 100 for 50K images)."""
    images: Path | None = None
    lists: tuple[Path, ...] = ()
    cap: int | None = None
    """At most this many images per cluster in its list (a seeded random choice); None: all."""
    seed: int = 0
    """Seed of k-means and of the capped choice."""
    sheet_size: int = 36
    """Thumbnails per contact sheet (the images nearest the cluster centre)."""
    thumbnail: int = 128
    """Side of one thumbnail in pixels."""
    shard: Shard = field(default_factory=Shard)
    device: str = "cpu"
    batch_size: int = 32
    progress: bool = True

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"--k must be at least 1, got {self.k}")
        if self.cap is not None and self.cap < 1:
            raise ValueError(f"--cap must be at least 1, got {self.cap}")


def embed_items(
    items: Sequence[ImageItem], options: ClusterOptions, journal_dir: Path
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(embedding by key, error by key) for `items`, journaled as they are computed."""
    from llavakit.datagen.llavar.clip import ClipModel
    from llavakit.image import ImageLoadError, load_image

    signature = str(Path(options.clip).resolve())
    journal = Journal(journal_file(journal_dir, "embed", options.shard))
    journal.load()
    finished = {
        key: item
        for key, item in read_journals(journal_dir, "embed").items()
        if item.get("clip") == signature
    }
    todo = [item for item in items if item.key not in finished]
    if todo:
        clip = ClipModel.load(options.clip, options.device)
        with (
            journal,
            tqdm(total=len(todo), desc="embed", unit="img", disable=not options.progress) as bar,
        ):
            for start in range(0, len(todo), options.batch_size):
                chunk = todo[start : start + options.batch_size]
                loaded = []
                for item in chunk:
                    try:
                        loaded.append((item, load_image(item.path, max_pixels=MAX_PIXELS)))
                    except ImageLoadError as error:
                        finished[item.key] = {"clip": signature, "error": str(error)}
                        journal.append(item.key, finished[item.key])
                if loaded:
                    vectors = clip.embed_images([image for _, image in loaded])  # (n, d)
                    for (item, _), vector in zip(loaded, vectors):
                        entry = {
                            "clip": signature,
                            "embedding": [round(float(v), 6) for v in vector],
                        }
                        finished[item.key] = entry
                        journal.append(item.key, entry)
                bar.update(len(chunk))
    embeddings, errors = {}, {}
    for item in items:
        entry = finished[item.key]
        if "embedding" in entry:
            embeddings[item.key] = np.asarray(entry["embedding"], dtype=np.float32)
        else:
            errors[item.key] = entry.get("error", "no embedding")
    return embeddings, errors


def kmeans(vectors: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(cluster index per row, distance of each row to its centre) for (n, d) vectors."""
    from sklearn.cluster import KMeans

    if k > len(vectors):
        raise ValueError(f"--k {k} is more than the {len(vectors)} images that could be embedded")
    model = KMeans(n_clusters=k, random_state=seed, n_init=10).fit(vectors)
    labels = model.labels_.astype(int)  # (n,)
    distances = np.linalg.norm(vectors - model.cluster_centers_[labels], axis=1)  # (n,)
    return labels, distances


def contact_sheet(paths: Sequence[Path], title: str, thumbnail: int) -> Image.Image:
    """A grid of letterboxed thumbnails under a title line."""
    from llavakit.image import ImageLoadError, load_image

    columns = max(1, math.ceil(math.sqrt(len(paths))))
    rows = max(1, math.ceil(len(paths) / columns))
    header, pad = 24, 4
    cell = thumbnail + pad
    sheet = Image.new("RGB", (columns * cell + pad, header + rows * cell + pad), (40, 40, 40))
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 5), title, fill=(255, 255, 255))
    for index, path in enumerate(paths):
        try:
            image = load_image(path, max_pixels=MAX_PIXELS)
        except ImageLoadError:
            continue
        image.thumbnail((thumbnail, thumbnail))
        x = pad + (index % columns) * cell + (thumbnail - image.width) // 2
        y = header + pad + (index // columns) * cell + (thumbnail - image.height) // 2
        sheet.paste(image, (x, y))
    return sheet


def run_cluster(options: ClusterOptions) -> str:
    """The cluster command; returns the report printed at the end."""
    items = gather_items(options.images, options.lists, options.shard)
    out = Path(options.out)
    embeddings, errors = embed_items(items, options, out / "journal")
    lines = [f"images: {len(items)}, embedded {len(embeddings)}, unreadable {len(errors)}"]
    lines += [f"  unreadable {key}: {error}" for key, error in list(errors.items())[:5]]
    if options.shard.count > 1:
        lines.append("sharded run: embeddings only; run again without --num-shards to cluster")
        return "\n".join(lines)
    keys = [item.key for item in items if item.key in embeddings]
    if not keys:
        raise ValueError("no image could be embedded; nothing to cluster")
    paths = {item.key: item.path for item in items}
    labels, distances = kmeans(np.stack([embeddings[key] for key in keys]), options.k, options.seed)

    for stale in out.iterdir():
        if _OUTPUT_NAME.match(stale.name):
            stale.unlink()  # from an earlier run with a larger k
    clusters = []
    for cluster in range(options.k):
        members = sorted((distances[i], keys[i]) for i in range(len(keys)) if labels[i] == cluster)
        chosen = members
        if options.cap is not None and len(members) > options.cap:
            chosen = sorted(random.Random(f"{options.seed}:{cluster}").sample(members, options.cap))
        name = f"cluster_{cluster:03d}"
        write_records(
            out / f"{name}.jsonl",
            [
                {
                    "image": key,
                    "path": str(paths[key]),
                    "cluster": cluster,
                    "distance": round(float(distance), 5),
                }
                for distance, key in chosen
            ],
        )
        shown = [paths[key] for _, key in members[: options.sheet_size]]
        title = f"{name}: {len(members)} images (nearest {len(shown)} to the centre)"
        contact_sheet(shown, title, options.thumbnail).save(out / f"{name}.png")
        clusters.append(
            {
                "cluster": cluster,
                "size": len(members),
                "listed": len(chosen),
                "sheet": f"{name}.png",
                "list": f"{name}.jsonl",
            }
        )
    summary: dict[str, Any] = {
        "k": options.k,
        "clip": str(Path(options.clip).resolve()),
        "seed": options.seed,
        "cap": options.cap,
        "clusters": clusters,
        "assignments": {key: int(label) for key, label in zip(keys, labels)},
        "unreadable": errors,
    }
    (out / "assignments.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    sizes = ", ".join(str(c["size"]) for c in clusters)
    lines += [
        f"clusters (sizes): {sizes}",
        f"wrote {out / 'assignments.json'} and {options.k} contact sheets + lists in {out}",
    ]
    return "\n".join(lines)
