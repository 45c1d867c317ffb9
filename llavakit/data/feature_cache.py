"""Cached vision-tower features: compute each image's selected-layer features once, reuse them.

With the tower frozen (stage 1, and stage 2 as published), its output for an image never changes,
yet a training run recomputes it every epoch and every run repeats it. The cache stores the
tower's selected features (before the projector, which is trained) in sharded safetensors,
under a folder named by a fingerprint of everything that decides them:

    DIR/<fingerprint>/key.json                 what the fingerprint stands for, readable
    DIR/<fingerprint>/index.json               {image hash: {"shard": file, "image_size": [h, w]}}
    DIR/<fingerprint>/shard-00000.safetensors  {image hash: [n_crops, N, C]}

The fingerprint covers the tower's weights, config and dtype, the select layer and feature, and
the image preprocessing (processor config, aspect-ratio mode, AnyRes grids); images are keyed by
a hash of their file's bytes. Changing any of these lands in a new folder or misses in the index,
so a stale feature is never used. Files are written whole and renamed into place.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from llavakit.files import write_atomic, write_text_atomic
from llavakit.image import load_image
from llavakit.model.integrity import check_safetensors
from llavakit.model.vision import VisionTower
from llavakit.processor import EncodedSample, LlavaProcessor

CACHE_FORMAT = 1
INDEX_NAME = "index.json"
KEY_NAME = "key.json"


class FeatureCacheError(ValueError):
    """The feature cache cannot serve a request (a missing image, an unusable folder)."""


@dataclass
class FeatureSample(EncodedSample):
    """An encoded sample whose images come as cached tower features instead of pixels."""

    vision_features: torch.Tensor | None = None
    """[n_crops, N, C] selected tower features of the sample's images, in order."""


def content_hash(data: bytes) -> str:
    """The key of one image: a hash of its file's bytes (renames and copies share features)."""
    return hashlib.sha256(data).hexdigest()


def tower_hash(tower: VisionTower) -> str:
    """A hash of the tower's config, dtype and every weight's bytes: its identity, not its path."""
    hasher = hashlib.sha256()
    hasher.update(tower.encoder.config.to_json_string(use_diff=False).encode())
    for name, tensor in tower.encoder.state_dict().items():
        hasher.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        hasher.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return hasher.hexdigest()


def cache_key(tower: VisionTower, processor: LlavaProcessor) -> dict:
    """Everything that decides an image's cached features, as plain JSON values."""
    model_config = processor.model_config
    return {
        "format": CACHE_FORMAT,
        "tower": tower_hash(tower),
        "tower_class": type(tower.encoder).__name__,
        "select_layer": tower.select_layer,
        "select_feature": tower.select_feature,
        "preprocessing": dataclasses.asdict(processor.image_config),
        "image_aspect_ratio": model_config.image_aspect_ratio,
        "image_grid_pinpoints": model_config.image_grid_pinpoints,
    }


def fingerprint(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


class FeatureCache:
    """One fingerprint's folder of cached features: look up, load and add."""

    def __init__(self, root: str | Path, key: dict):
        self.key = key
        self.folder = Path(root) / fingerprint(key)
        self.folder.mkdir(parents=True, exist_ok=True)
        key_path = self.folder / KEY_NAME
        if not key_path.is_file():
            write_text_atomic(key_path, json.dumps(key, indent=1, default=str))
        index_path = self.folder / INDEX_NAME
        try:
            self.index: dict[str, dict] = (
                json.loads(index_path.read_text()) if index_path.is_file() else {}
            )
        except json.JSONDecodeError as error:
            raise FeatureCacheError(f"{index_path} is not valid JSON: {error}") from None
        self._shards: dict[str, object] = {}  # open safetensors handles, per shard file

    @classmethod
    def for_model(cls, root: str | Path, tower: VisionTower, processor: LlavaProcessor):
        return cls(root, cache_key(tower, processor))

    def __contains__(self, image_key: str) -> bool:
        return image_key in self.index

    def __len__(self) -> int:
        return len(self.index)

    def load(self, image_key: str) -> tuple[torch.Tensor, tuple[int, int]]:
        """(features [n_crops, N, C], original (height, width)) of one image."""
        entry = self.index.get(image_key)
        if entry is None:
            raise FeatureCacheError(
                f"image {image_key[:12]}… is not in the feature cache {self.folder}; "
                "fill the cache for this data set first"
            )
        shard = self._shards.get(entry["shard"])
        if shard is None:
            path = self.folder / entry["shard"]
            if not path.is_file():
                raise FeatureCacheError(f"feature cache shard {path} is missing")
            check_safetensors(path)  # a truncated shard is named, not a loader traceback
            shard = self._shards[entry["shard"]] = safe_open(str(path), framework="pt")
        height, width = entry["image_size"]
        return shard.get_tensor(image_key), (height, width)

    def add(self, features: dict[str, tuple[torch.Tensor, tuple[int, int]]]) -> None:
        """Write one new shard holding these images and record them in the index."""
        if not features:
            return
        name = f"shard-{len(list(self.folder.glob('shard-*.safetensors'))):05d}.safetensors"
        tensors = {k: v.detach().contiguous().cpu() for k, (v, _) in features.items()}
        write_atomic(
            self.folder / name,
            lambda temporary: save_file(tensors, str(temporary), {"format": "pt"}),
        )
        for image_key, (_, size) in features.items():
            self.index[image_key] = {"shard": name, "image_size": list(size)}
        write_text_atomic(self.folder / INDEX_NAME, json.dumps(self.index))


def fill_feature_cache(
    cache: FeatureCache,
    image_paths: Iterable[str | Path],
    processor: LlavaProcessor,
    tower: VisionTower,
    batch_size: int = 64,
    shard_images: int = 4096,
    progress: bool = True,
) -> int:
    """Compute and store the features of every image not cached yet; returns how many were new.

    Images are read once (their bytes give the key), preprocessed exactly as training would, and
    run through the tower without gradients in batches of `batch_size` images.
    """
    device = next(tower.parameters()).device
    pending: dict[str, tuple[torch.Tensor, tuple[int, int]]] = {}
    batch: list[tuple[str, object]] = []
    computed = 0

    def run_batch() -> None:
        crops = [torch.from_numpy(processor.preprocess_images([image])) for _, image in batch]
        with torch.inference_mode():
            features = tower(torch.cat(crops).to(device))  # [sum crops, N, C]
        for (image_key, image), part in zip(batch, features.split([len(c) for c in crops])):
            pending[image_key] = (part.cpu().clone(), (image.height, image.width))
        batch.clear()

    seen: set[str] = set()
    paths = sorted({str(p) for p in image_paths})
    for path in tqdm(paths, desc="caching vision features", disable=not progress):
        data = Path(path).read_bytes()
        image_key = content_hash(data)
        if image_key in cache or image_key in seen:
            continue
        seen.add(image_key)
        batch.append((image_key, load_image(data)))
        computed += 1
        if len(batch) == batch_size:
            run_batch()
        if len(pending) >= shard_images:
            cache.add(pending)
            pending.clear()
    if batch:
        run_batch()
    cache.add(pending)
    return computed


def cached_sample(sample: EncodedSample, features: Sequence[torch.Tensor]) -> FeatureSample:
    """The sample (encoded without pixels) with its kept images' cached features [n_crops, N, C]."""
    kept = features[: len(sample.image_sizes)]
    fields = {f.name: getattr(sample, f.name) for f in dataclasses.fields(EncodedSample)}
    return FeatureSample(
        **{**fields, "pixel_values": None},
        vision_features=torch.cat(list(kept)) if kept else None,
    )
