"""The stage-0 CLIP's training data: (image, caption) pairs checked, encoded and split.

Images are decoded once (shared images and paths once each), captions tokenised to CLIP's
context length, equal caption texts given one class (so they count as positives of each other),
and a held-out share of the images kept apart for retrieval and region accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

MAX_CAPTION_TOKENS = 77
"""CLIP's text context length; longer captions are cut, keeping the end-of-text token."""


@dataclass(frozen=True)
class EncodedPairs:
    """Every pair as tensors, computed once: images are preprocessed a single time even when
    they come with several captions."""

    pixels: torch.Tensor  # (n_images, 3, S, S)
    token_ids: torch.Tensor  # (n_pairs, L) `<s> caption </s>` right-padded
    attention: torch.Tensor  # (n_pairs, L)
    image_index: torch.Tensor  # (n_pairs,) row of `pixels` each pair shows
    caption_index: torch.Tensor  # (n_pairs,) equal for equal caption texts

    def batch(self, rows: torch.Tensor):
        """(ids, mask, pixel_values, positives) for the pairs at `rows`, padding trimmed."""
        ids, mask = trim(self.token_ids[rows], self.attention[rows])
        pixel_values = self.pixels[self.image_index[rows]]  # (B, 3, S, S)
        positives = positive_mask(self.image_index[rows], self.caption_index[rows])  # (B, B)
        return ids, mask, pixel_values, positives


def encode_pairs(images, image_of_pair, captions, processor, tokenizer) -> EncodedPairs:
    token_ids, attention = tokenize_captions(captions, tokenizer)
    return EncodedPairs(
        pixels=preprocess_images(images, processor),
        token_ids=token_ids,
        attention=attention,
        image_index=torch.tensor(image_of_pair),
        caption_index=torch.tensor(caption_classes(captions)),
    )


def validate_pairs(pairs: Sequence[tuple]) -> tuple[list[int], list, list[str], list]:
    """Check every pair and load each distinct image (same path or same PIL object) once.

    Returns, per pair, the index of its image among the distinct images; the distinct images
    as RGB PIL images in order of first appearance; the captions; and each distinct image as
    it was given (its path or PIL object).
    """
    from PIL import Image

    image_of_pair, images, captions, sources, seen = [], [], [], [], {}
    for index, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"CLIP pair {index}: expected (image, caption), got {pair!r:.80}")
        image, caption = pair
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError(
                f"CLIP pair {index}: caption must be a non-empty string, got {caption!r}"
            )
        if isinstance(image, Image.Image):
            key = ("pil", id(image))
        elif isinstance(image, (str, Path)):
            key = ("path", str(Path(image).resolve()))
        else:
            raise TypeError(
                f"CLIP pair {index}: image must be a PIL image or a path, got {type(image).__name__}"
            )
        if key not in seen:
            seen[key] = len(images)
            images.append(load_rgb(image, index))
            sources.append(image)
        image_of_pair.append(seen[key])
        captions.append(caption)
    if len(images) < 2:
        raise ValueError(f"CLIP training needs at least 2 distinct images, got {len(images)}")
    return image_of_pair, images, captions, sources


def load_rgb(image, pair_index: int):
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"CLIP pair {pair_index}: image file not found: {path}")
    try:
        with Image.open(path) as opened:
            return opened.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"CLIP pair {pair_index}: cannot read image {path}: {error}") from error


def caption_classes(captions: list[str]) -> list[int]:
    """One integer per caption; captions equal up to case and surrounding space share it."""
    classes: dict[str, int] = {}
    return [classes.setdefault(caption.strip().lower(), len(classes)) for caption in captions]


def split_by_image(
    image_of_pair: list[int], n_images: int, heldout_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Row indices of training and held-out pairs; an image's pairs all land on one side."""
    if not 0 <= heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    count = round(n_images * heldout_fraction)
    if heldout_fraction > 0:
        count = min(max(count, 1), n_images - 1)
    order = torch.randperm(n_images, generator=torch.Generator().manual_seed(seed + 1))
    heldout = set(order[:count].tolist())
    train_rows = [row for row, image in enumerate(image_of_pair) if image not in heldout]
    heldout_rows = [row for row, image in enumerate(image_of_pair) if image in heldout]
    return train_rows, heldout_rows


def preprocess_images(images: list, processor) -> torch.Tensor:
    """All distinct images through the CLIP processor once, in chunks to bound memory spikes."""
    chunks = [
        processor(images=images[start : start + 256], return_tensors="pt")["pixel_values"]
        for start in range(0, len(images), 256)
    ]
    return torch.cat(chunks)  # (n_images, 3, S, S)


def tokenize_captions(captions: list[str], tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """`<s> caption </s>` per caption, right-padded; the text tower pools at the `</s>`."""
    rows = []
    for caption in captions:
        ids = tokenizer(caption, add_special_tokens=True)["input_ids"][: MAX_CAPTION_TOKENS - 1]
        rows.append(ids + [tokenizer.eos_token_id])
    length = max(len(ids) for ids in rows)
    token_ids = torch.full((len(rows), length), tokenizer.pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(rows), length), dtype=torch.long)
    for row, ids in enumerate(rows):
        token_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
    return token_ids, attention


def trim(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop padding columns that no caption of this batch uses."""
    length = int(mask.sum(dim=1).max())
    return ids[:, :length], mask[:, :length]


def positive_mask(image_index: torch.Tensor, caption_index: torch.Tensor) -> torch.Tensor:
    """(B, B) bool: pairs i, j match when they show the same image or say the same caption."""
    same_image = image_index[:, None] == image_index[None, :]
    same_caption = caption_index[:, None] == caption_index[None, :]
    return same_image | same_caption
