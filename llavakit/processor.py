"""Processor: conversation + images -> token ids, labels and pixel values, ready for the model.

It owns the one place where `<image>` becomes placeholders: the template renders the text (with
one `<image>` token per image), then each `<image>` id is expanded to as many placeholder ids as
that image will produce feature vectors (fixed for square inputs, size-dependent for AnyRes).
Labels on placeholders are -100. Truncation happens after expansion, never inside an image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from llavakit.config import ModelConfig
from llavakit.conversation import IGNORE_INDEX, IMAGE_TOKEN, get_template
from llavakit.conversation import encode as encode_conversation
from llavakit.data.collate import collate_samples
from llavakit.image import anyres_tiles, expand_to_square, preprocess, to_pixel_values
from llavakit.image_config import ImageProcessorConfig
from llavakit.image_tokens import ImageTokens

IM_START_TOKEN = "<im_start>"
IM_END_TOKEN = "<im_end>"


class SampleError(ValueError):
    """A sample cannot be turned into training tensors; the message says why."""


@dataclass
class EncodedSample:
    """One conversation as model inputs (lists, unpadded)."""

    input_ids: list[int]
    labels: list[int]
    pixel_values: np.ndarray | None = None
    """[n_crops, 3, S, S]: one crop per image, or 1 + tiles per image for AnyRes."""
    image_sizes: list[tuple[int, int]] = field(default_factory=list)
    """Original (height, width) of each image kept."""
    truncated: bool = False
    truncation: str = ""
    """How a truncated sample was cut, e.g. "230 tokens (images included) cut to max_length=100"."""
    highres_pixel_values: np.ndarray | None = None
    """[n_images * grid^2, 3, S', S']: LLaVAR high-res crops of each image (model.highres only)."""


@dataclass
class VisionGeometry:
    """What the processor must know about the vision tower to count image features."""

    image_size: int
    patch_size: int
    features_per_crop: int
    """Feature vectors the tower gives per crop (CLS included or not, before the projector)."""
    highres_crop_size: int | None = None
    """Input side of the LLaVAR high-res encoder, when the model has one."""


class LlavaProcessor:
    """Tokenizer + template + image preprocessing for one model."""

    def __init__(
        self,
        tokenizer,
        image_config: ImageProcessorConfig,
        model_config: ModelConfig,
        geometry: VisionGeometry,
    ):
        self.tokenizer = tokenizer
        self.image_config = image_config
        self.model_config = model_config
        self.geometry = geometry
        self.template = get_template(model_config.template)
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        if self.image_token_id is None or self.image_token_id == tokenizer.unk_token_id:
            raise ValueError(
                f"tokenizer has no {IMAGE_TOKEN} token; build it with add_image_tokens()"
            )
        self.wrap_ids = None
        if model_config.use_im_start_end:
            self.wrap_ids = (
                tokenizer.convert_tokens_to_ids(IM_START_TOKEN),
                tokenizer.convert_tokens_to_ids(IM_END_TOKEN),
            )
        self.image_tokens = ImageTokens.for_model(
            model_config, geometry.image_size, geometry.patch_size, geometry.features_per_crop
        )
        pinpoints = self.image_tokens.pinpoints
        self.pinpoints = list(pinpoints) if pinpoints is not None else None

    # ---- images ----------------------------------------------------------------------------
    def image_token_count(self, image_size_hw: tuple[int, int]) -> int:
        """Feature vectors (= placeholder tokens) this image becomes."""
        return self.image_tokens.count(image_size_hw)

    def preprocess_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """[n_crops, 3, S, S] float32 for a list of RGB images."""
        crops = []
        for image in images:
            if self.pinpoints is not None:
                crops.append(anyres_tiles(image, self.image_config, self.pinpoints))
            else:
                crops.append(
                    preprocess(image, self.image_config, self.model_config.image_aspect_ratio)[None]
                )
        return np.concatenate(crops, axis=0)

    def preprocess_highres(self, images: Sequence[Image.Image]) -> np.ndarray | None:
        """[n_images * grid^2, 3, S', S'] LLaVAR high-res crops, or None without a high-res branch."""
        settings = self.model_config.highres
        if settings is None or not images:
            return None
        if self.geometry.highres_crop_size is None:
            raise ValueError("the model config has `highres` but the geometry no highres_crop_size")
        return np.concatenate(
            [
                highres_crops(
                    image, self.image_config, settings.grid, self.geometry.highres_crop_size
                )
                for image in images
            ]
        )

    # ---- text ------------------------------------------------------------------------------
    def encode(
        self,
        messages: list[dict],
        images: Sequence[Image.Image] = (),
        add_generation_prompt: bool = False,
        max_length: int | None = None,
    ) -> EncodedSample:
        """Render, expand image placeholders, truncate; raise SampleError if nothing is trainable."""
        sizes = [(image.height, image.width) for image in images]
        sample = self.encode_text(messages, sizes, add_generation_prompt, max_length)
        kept = images[: len(sample.image_sizes)]
        if kept:
            sample.pixel_values = self.preprocess_images(kept)
            sample.highres_pixel_values = self.preprocess_highres(kept)
        return sample

    def encode_text(
        self,
        messages: list[dict],
        image_sizes: Sequence[tuple[int, int]] = (),
        add_generation_prompt: bool = False,
        max_length: int | None = None,
    ) -> EncodedSample:
        """`encode` without pixels: ids, labels and the (height, width) of each image kept.

        Cached tower features stand in for pixels in stage 1, and their sizes are stored with
        them, so a cached sample is built without decoding or resizing a single image.
        """
        encoded = encode_conversation(
            self.tokenizer, self.template, messages, add_generation_prompt=add_generation_prompt
        )
        n_tags = encoded.input_ids.count(self.image_token_id)
        if n_tags != len(image_sizes):
            raise SampleError(
                f"the text has {n_tags} {IMAGE_TOKEN} tag(s) but {len(image_sizes)} image(s) were given"
            )
        sizes = list(image_sizes)
        ids, labels, spans = self._expand(encoded.input_ids, encoded.labels, sizes)
        limit = max_length or self.model_config.max_length
        truncated = len(ids) > limit
        n_kept = len(sizes)
        if truncated and add_generation_prompt:
            # Cutting a prompt would cut the assistant prefix the answer must follow.
            raise SampleError(
                f"the prompt is {len(ids)} tokens (images included), longer than the "
                f"model's max_length={limit}"
            )
        if truncated:
            cut, wrap = limit, 1 if self.wrap_ids else 0
            for index, (start, end) in enumerate(spans):
                if end + wrap > cut:
                    # Never cut inside an image: drop it (and those after) whole.
                    n_kept, cut = index, start - wrap
                    break
            dropped = len(sizes) - n_kept
            note = f"{len(ids)} tokens (images included) cut to max_length={limit}" + (
                f", dropping {dropped} image(s) that would not fit whole" if dropped else ""
            )
            ids, labels = ids[:cut], labels[:cut]
            if not add_generation_prompt and all(label == IGNORE_INDEX for label in labels):
                raise SampleError(
                    f"every answer token lies beyond max_length={limit} "
                    f"(sample is {len(encoded.input_ids)} text tokens + images)"
                )
            return EncodedSample(ids, labels, None, sizes[:n_kept], True, note)
        return EncodedSample(ids, labels, None, sizes, False)

    def _expand(self, ids: list[int], labels: list[int], sizes: list[tuple[int, int]]):
        """Replace each <image> id by its placeholders; returns ids, labels, image spans."""
        out_ids: list[int] = []
        out_labels: list[int] = []
        spans: list[tuple[int, int]] = []
        image_index = 0
        for token, label in zip(ids, labels):
            if token != self.image_token_id:
                out_ids.append(token)
                out_labels.append(label)
                continue
            count = self.image_token_count(sizes[image_index])
            image_index += 1
            if self.wrap_ids:
                out_ids.append(self.wrap_ids[0])
                out_labels.append(IGNORE_INDEX)
            spans.append((len(out_ids), len(out_ids) + count))
            out_ids.extend([self.image_token_id] * count)
            out_labels.extend([IGNORE_INDEX] * count)
            if self.wrap_ids:
                out_ids.append(self.wrap_ids[1])
                out_labels.append(IGNORE_INDEX)
        return out_ids, out_labels, spans

    # ---- batches for generation ------------------------------------------------------------
    def prompt_batch(
        self,
        conversations: Sequence[list[dict]],
        images: Sequence[Sequence[Image.Image]],
    ) -> dict[str, torch.Tensor]:
        """Left-padded generation inputs for several conversations ending in a user turn."""
        samples = [
            self.encode(messages, imgs, add_generation_prompt=True)
            for messages, imgs in zip(conversations, images)
        ]
        return collate_samples(samples, self.pad_token_id, padding_side="left")

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def save_pretrained(self, folder) -> None:
        self.tokenizer.save_pretrained(folder)
        self.image_config.save_pretrained(folder)


def highres_crops(
    image: Image.Image, cfg: ImageProcessorConfig, grid: int, crop_size: int
) -> np.ndarray:
    """LLaVAR's high-resolution view of one RGB image: float32 [grid^2, 3, crop, crop], row-major.

    The image is padded to a square with the mean colour (nothing is cut off, as in LLaVA-1.5's
    `pad`), resized to grid * crop_size pixels a side and cut into grid x grid crops, each
    normalised as the main tower's pixels are.
    """
    side = grid * crop_size
    square = expand_to_square(image, cfg.pad_color).resize((side, side), resample=cfg.resample)
    return np.stack(
        [
            to_pixel_values(square.crop((left, top, left + crop_size, top + crop_size)), cfg)
            for top in range(0, side, crop_size)
            for left in range(0, side, crop_size)
        ]
    )
