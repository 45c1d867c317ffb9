"""Samples to batches: the one collation module, padded or packed.

`collate_samples` pads samples into rows (right for training, left for generation prompts);
`Collator` is its training form; `PackingCollator` puts several whole samples in one row. All three
take the images' tensors from `vision_inputs`, so pixels, cached tower features, image sizes and
LLaVAR's high-res crops are batched the same way whatever the rows look like.

Multimodal packing: a LLaVA batch mixes one-line VQA answers with long conversations and text-only
chats, so padding every row to the longest sample wastes much of each step. Packing puts several
whole samples in one row instead: position ids restart at 0 for each sample (the model turns that
into attention that stays inside each sample), each sample's first label is -100 (so no token is
ever trained to follow the previous sample; it is never trained unpacked either, having nothing
before it), and images are concatenated in row order, so they still meet their placeholders in
order. Packing is done per batch: the same samples make one optimiser step as without packing,
only in fewer, fuller rows. The loss is the token mean over every trained token of the step
either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from llavakit.conversation import IGNORE_INDEX

if TYPE_CHECKING:
    from llavakit.processor import EncodedSample


def vision_inputs(samples: Sequence[EncodedSample]) -> dict[str, torch.Tensor]:
    """Pixels (or cached tower features), image sizes and high-res crops of samples, in order.

    returns pixel_values [n_crops, 3, S, S] or vision_features [n_crops, N, C] (FeatureSample,
    llavakit.data.feature_cache), image_sizes [n_images, 2], highres_pixel_values; only those
    the samples have.
    """
    batch: dict[str, torch.Tensor] = {}
    crops = [s.pixel_values for s in samples if s.pixel_values is not None]
    if crops:
        batch["pixel_values"] = torch.from_numpy(np.concatenate(crops, axis=0))
    features = [
        s.vision_features for s in samples if getattr(s, "vision_features", None) is not None
    ]
    if features:
        batch["vision_features"] = torch.cat(features, dim=0)  # [n_crops, N, C]
    if crops or features:
        batch["image_sizes"] = torch.tensor(
            [size for s in samples for size in s.image_sizes], dtype=torch.long
        )
    highres = [s.highres_pixel_values for s in samples if s.highres_pixel_values is not None]
    if highres:  # LLaVAR's high-resolution crops, in the same image order
        batch["highres_pixel_values"] = torch.from_numpy(np.concatenate(highres, axis=0))
    return batch


def collate_samples(
    samples: Sequence[EncodedSample], pad_token_id: int, padding_side: str = "right"
) -> dict[str, torch.Tensor]:
    """Pad a list of samples into a batch.

    returns input_ids/labels/attention_mask [B, T] and the samples' `vision_inputs`.
    """
    longest = max(len(s.input_ids) for s in samples)
    input_ids = torch.full((len(samples), longest), pad_token_id, dtype=torch.long)
    labels = torch.full((len(samples), longest), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(samples), longest), dtype=torch.long)
    for row, sample in enumerate(samples):
        n = len(sample.input_ids)
        cols = slice(longest - n, longest) if padding_side == "left" else slice(0, n)
        input_ids[row, cols] = torch.tensor(sample.input_ids)
        labels[row, cols] = torch.tensor(sample.labels)
        attention_mask[row, cols] = 1
    batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
    return batch | vision_inputs(samples)


class Collator:
    """Pads EncodedSamples into a right-padded training batch."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, samples: list[EncodedSample]) -> dict[str, torch.Tensor]:
        return collate_samples(samples, self.pad_token_id, padding_side="right")


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices grouped into bins of total length <= capacity: longest first, into the first bin
    with room (first-fit decreasing; never more than 11/9 of the optimal bin count + 1).

    Bins come out in the order they were opened, each listing its indices longest first.
    """
    if capacity < 1:
        raise ValueError(f"packing capacity must be >= 1 token, got {capacity}")
    too_long = [(i, n) for i, n in enumerate(lengths) if n > capacity]
    if too_long:
        index, length = too_long[0]
        raise ValueError(
            f"sample {index} has {length} tokens, more than the packing length {capacity}; "
            "raise train.packing_length or lower model.max_length"
        )
    bins: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for b, free in enumerate(room):
            if lengths[index] <= free:
                bins[b].append(index)
                room[b] -= lengths[index]
                break
        else:
            bins.append([index])
            room.append(capacity - lengths[index])
    return bins


class PackingCollator:
    """Packs a batch of EncodedSamples into rows of at most `max_length` tokens.

    returns input_ids / labels / position_ids [R, L] (R rows, L = the fullest row's length;
    the tail of each row is padding, a segment of its own), and pixel_values or vision_features
    with image_sizes, ordered row by row as the placeholders are.
    """

    def __init__(self, pad_token_id: int, max_length: int):
        self.pad_token_id = pad_token_id
        self.max_length = max_length

    def __call__(self, samples: list[EncodedSample]) -> dict[str, torch.Tensor]:
        rows = first_fit_decreasing([len(s.input_ids) for s in samples], self.max_length)
        longest = max(sum(len(samples[i].input_ids) for i in row) for row in rows)
        shape = (len(rows), longest)
        input_ids = torch.full(shape, self.pad_token_id, dtype=torch.long)
        labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros(shape, dtype=torch.long)
        for r, row in enumerate(rows):
            start = 0
            for index in row:
                sample = samples[index]
                n = len(sample.input_ids)
                input_ids[r, start : start + n] = torch.tensor(sample.input_ids)
                labels[r, start + 1 : start + n] = torch.tensor(sample.labels[1:], dtype=torch.long)
                position_ids[r, start : start + n] = torch.arange(n)
                start += n
            position_ids[r, start:] = torch.arange(longest - start)  # padding: its own segment
        ordered = [samples[i] for row in rows for i in row]
        return {
            "input_ids": input_ids,
            "labels": labels,
            "position_ids": position_ids,
            **vision_inputs(ordered),
        }
