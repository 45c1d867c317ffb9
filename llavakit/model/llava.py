"""The LLaVA model: vision tower -> projector -> features scattered into the LLM's embeddings.

The processor has already expanded every `<image>` into as many placeholder tokens as the image
yields feature vectors, so sequence lengths (and labels, and truncation) are fixed before the
forward pass. Here the placeholders' embeddings are replaced, in order, by the projected features;
a count mismatch is an error naming the samples involved. Everything else is the language model's
own forward and generate, so KV caching, sampling and attention kernels come from transformers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from llavakit.config import ModelConfig
from llavakit.model.vision import VisionTower


class ImageTokenMismatch(ValueError):
    """The number of <image> placeholder tokens does not match the image features given."""


class LlavaModel(nn.Module):
    """A vision tower, a projector and any causal language model, spliced at <image> tokens."""

    def __init__(
        self,
        config: ModelConfig,
        vision_tower: VisionTower,
        projector: nn.Module,
        language_model: nn.Module,
        image_token_id: int,
        image_newline: nn.Parameter | None = None,
    ):
        super().__init__()
        self.config = config
        self.vision_tower = vision_tower
        self.projector = projector
        self.language_model = language_model
        self.image_token_id = image_token_id
        # AnyRes only: a learned vector appended after each row of tile features.
        self.image_newline = image_newline

    # ---- images ----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(
            self.projector.parameters(), self.language_model.get_input_embeddings().weight
        ).device

    def encode_images(
        self, pixel_values: torch.Tensor, image_sizes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Projected features of every image, concatenated in order.

        pixel_values: [n_images, 3, S, S], or for AnyRes [sum of (1 + tiles) over images, 3, S, S]
        image_sizes: [n_images, 2] original (height, width), AnyRes only.
        returns: [total_features, hidden]
        """
        features = self.vision_tower(pixel_values)  # [n, N, C]
        features = self.projector(features.to(self._projector_dtype()))  # [n, N, D]
        if self.config.image_aspect_ratio != "anyres":
            return features.reshape(-1, features.shape[-1])
        return self._pack_anyres(features, image_sizes)

    def _projector_dtype(self) -> torch.dtype:
        first = next(self.projector.parameters(), None)
        return first.dtype if first is not None else self.vision_tower.encoder.dtype

    def _pack_anyres(
        self, features: torch.Tensor, image_sizes: torch.Tensor | None
    ) -> torch.Tensor:
        from llavakit.image import anyres_grid_shape, parse_grid_pinpoints
        from llavakit.model.anyres import pack_anyres_features

        if image_sizes is None:
            raise ValueError(
                "AnyRes models need image_sizes (original height, width of each image)"
            )
        tile = self.vision_tower.image_size
        pinpoints = parse_grid_pinpoints(self.config.image_grid_pinpoints, tile)
        packed, start = [], 0
        for height, width in image_sizes.tolist():
            rows, cols = anyres_grid_shape((height, width), pinpoints, tile)
            n_crops = 1 + rows * cols
            packed.append(
                pack_anyres_features(
                    features[start : start + n_crops],
                    (height, width),
                    pinpoints,
                    tile,
                    self.image_newline,
                    max_num_patches=self.config.anyres_max_patches,
                )
            )
            start += n_crops
        if start != features.shape[0]:
            raise ImageTokenMismatch(
                f"AnyRes: {features.shape[0]} crops given but image_sizes account for {start}"
            )
        return torch.cat(packed, dim=0)

    # ---- embeddings ------------------------------------------------------------------------
    def embed(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings with image features written over the placeholders.

        input_ids: [B, T]; image_features (optional, precomputed projected features): [F, D]
        returns: [B, T, D]
        """
        is_image = input_ids == self.image_token_id  # [B, T]
        embed_tokens = self.language_model.get_input_embeddings()
        # The placeholder id may lie outside the LLM's vocabulary: embed a harmless id instead.
        embeds = embed_tokens(input_ids.masked_fill(is_image, 0))
        if image_features is None and pixel_values is not None:
            image_features = self.encode_images(pixel_values, image_sizes)
        n_placeholders = int(is_image.sum())
        n_features = 0 if image_features is None else image_features.shape[0]
        if n_placeholders != n_features:
            per_sample = is_image.sum(dim=1).tolist()
            raise ImageTokenMismatch(
                f"the batch has {n_placeholders} image placeholder tokens but the images give "
                f"{n_features} feature vectors (placeholders per sample: {per_sample}); each "
                "sample needs exactly one image per <image> in its text"
            )
        if n_features:
            embeds = embeds.masked_scatter(
                is_image.unsqueeze(-1), image_features.to(embeds.device, embeds.dtype)
            )
        return embeds

    # ---- forward / generate ----------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        **kwargs: Any,
    ):
        """Language-model outputs (loss when labels are given; labels already -100 on images)."""
        inputs_embeds = self.embed(input_ids, pixel_values, image_sizes, image_features)
        if position_ids is None and attention_mask is not None and attention_mask.dim() == 2:
            # Positions count real tokens only, so left-padded rows match their unpadded selves.
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            labels=labels,
            **kwargs,
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """New token ids only ([B, new]); batches must be left-padded."""
        inputs_embeds = self.embed(input_ids, pixel_values, image_sizes)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self.language_model.generate(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, **generate_kwargs
        )

    # ---- training helpers ------------------------------------------------------------------
    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, **kwargs):
        """Called by transformers' Trainer; checkpoint the LLM (and the tower when trained)."""
        self.gradient_checkpointing_enable(activation_checkpointing_kwargs)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None, **kwargs):
        options = gradient_checkpointing_kwargs or {"use_reentrant": False}
        self.language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
        if not self.vision_tower.is_frozen():
            self.vision_tower.encoder.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs=options
            )
