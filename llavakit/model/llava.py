"""The LLaVA model: vision tower -> projector -> features scattered into the LLM's embeddings.

The processor has already expanded every `<image>` into as many placeholder tokens as the image
yields feature vectors, so sequence lengths (and labels, and truncation) are fixed before the
forward pass. Here the placeholders' embeddings are replaced, in order, by the projected features;
a count mismatch is an error naming the samples involved. Everything else is the language model's
own forward and generate, so KV caching, sampling and attention kernels come from transformers.

Training extras live here too because they change what one forward computes: packed rows (several
samples in one row, found where position ids restart at 0, attention kept inside each), cached
tower features in place of pixels, and a loss that projects only the positions that are trained.

A LLaVAR high-res branch (model/highres.py), when present, gets each row's high-resolution crop
features for the duration of one forward or generate call; its blocks are hooked into the LLM.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from transformers import modeling_utils
from transformers.modeling_outputs import CausalLMOutputWithPast

from llavakit.config import ModelConfig
from llavakit.conversation import IGNORE_INDEX, IMAGE_TOKEN
from llavakit.image_tokens import ImageTokens
from llavakit.model.highres import HighresBranch, HighresContext, HighresError
from llavakit.model.loss import chunked_cross_entropy, plain_head_parts
from llavakit.model.vision import VisionTower


class ImageTokenMismatch(ValueError):
    """The number of <image> placeholder tokens does not match the image features given."""


# Whether this transformers lets causal LMs take a boolean [B, T] `logits_to_keep` (5.2x does);
# older releases compute every position's logits and the loss selects the trained ones.
_LOGITS_BY_MASK = hasattr(modeling_utils, "slice_logits_to_keep")
# Attention kernels that take a materialised [B, 1, T, T] mask; the others (flash attention,
# flex attention) find packed samples from restarting position ids themselves.
_DENSE_MASK_ATTENTION = ("sdpa", "eager")


def packed_causal_mask(position_ids: torch.Tensor) -> torch.Tensor | None:
    """Block-diagonal causal mask for packed rows, or None when no row holds two samples.

    A sample starts wherever its position ids restart at 0, so a row packed as positions
    [0 1 2 0 1 0 1 2 3] holds samples of 3, 2 and 4 tokens, and a token sees only earlier tokens
    of its own sample. position_ids: [B, T] -> mask [B, 1, T, T] (True = may attend)
    """
    starts = position_ids == 0  # [B, T]
    if int(starts.sum(dim=1).max()) <= 1:
        return None
    sample = starts.long().cumsum(dim=1)  # [B, T] index of each token's sample in its row
    same_sample = sample[:, :, None] == sample[:, None, :]  # [B, T, T]
    length = position_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=position_ids.device).tril()
    return (same_sample & causal)[:, None]


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Eager attention adds its mask to the scores: 0 where allowed, the dtype's minimum elsewhere."""
    blocked = torch.finfo(dtype).min
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, blocked)


class LlavaModel(nn.Module):
    """A vision tower, a projector and any causal language model, spliced at <image> tokens."""

    # transformers' Trainer reads this to count trained tokens over labels[..., 1:], as the
    # causal-LM loss (which predicts each token from the one before) does.
    loss_type = "ForCausalLM"

    def __init__(
        self,
        config: ModelConfig,
        vision_tower: VisionTower,
        projector: nn.Module,
        language_model: nn.Module,
        image_token_id: int,
        image_newline: nn.Parameter | None = None,
        highres: HighresBranch | None = None,
    ):
        super().__init__()
        self.config = config
        self.vision_tower = vision_tower
        self.projector = projector
        self.language_model = language_model
        self.image_token_id = image_token_id
        # AnyRes only: a learned vector appended after each row of tile features.
        self.image_newline = image_newline
        # LLaVAR high-res only: cross-attention blocks hooked into the LLM's decoder layers.
        self.highres = highres
        if highres is not None:
            highres.attach(language_model)

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
        return self.project_features(self.vision_tower(pixel_values), image_sizes)

    def project_features(
        self, vision_features: torch.Tensor, image_sizes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The projector (and AnyRes layout) over the tower's selected features.

        Split from encode_images so features computed once and cached (the tower is frozen) go
        through exactly the trained part of the image path.
        vision_features: [n_crops, N, C] -> [total_features, hidden]
        """
        features = self.projector(vision_features.to(self._projector_dtype()))  # [n, N, D]
        if self.config.image_aspect_ratio != "anyres":
            return features.reshape(-1, features.shape[-1])
        return self._pack_anyres(features, image_sizes)

    def _projector_dtype(self) -> torch.dtype:
        first = next(self.projector.parameters(), None)
        return first.dtype if first is not None else self.vision_tower.encoder.dtype

    def _pack_anyres(
        self, features: torch.Tensor, image_sizes: torch.Tensor | None
    ) -> torch.Tensor:
        from llavakit.image_tokens import anyres_grid_shape
        from llavakit.model.anyres import pack_anyres_features

        if image_sizes is None:
            raise ValueError(
                "AnyRes models need image_sizes (original height, width of each image)"
            )
        tile = self.vision_tower.image_size
        pinpoints = list(self.image_tokens().pinpoints)
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
        vision_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings with image features written over the placeholders.

        input_ids: [B, T]; image_features (optional, precomputed projected features): [F, D];
        vision_features (optional, cached tower features, projected here): [n_crops, N, C]
        returns: [B, T, D]
        """
        is_image = input_ids == self.image_token_id  # [B, T]
        embed_tokens = self.language_model.get_input_embeddings()
        # The placeholder id may lie outside the LLM's vocabulary: embed a harmless id instead.
        embeds = embed_tokens(input_ids.masked_fill(is_image, 0))
        if image_features is None and vision_features is not None:
            image_features = self.project_features(vision_features.to(self.device), image_sizes)
        elif image_features is None and pixel_values is not None:
            image_features = self.encode_images(pixel_values, image_sizes)
        n_placeholders = int(is_image.sum())
        n_features = 0 if image_features is None else image_features.shape[0]
        if n_placeholders != n_features:
            per_sample = is_image.sum(dim=1).tolist()
            raise ImageTokenMismatch(
                f"the batch has {n_placeholders} image placeholder tokens but the images give "
                f"{n_features} feature vectors (placeholders per sample: {per_sample}); each "
                f"sample needs exactly one image per {IMAGE_TOKEN} in its text"
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
        vision_features: torch.Tensor | None = None,
        highres_pixel_values: torch.Tensor | None = None,
        loss_only: bool = False,
        loss_chunk_tokens: int | None = None,
        **kwargs: Any,
    ):
        """Language-model outputs (loss when labels are given; labels already -100 on images).

        Packed rows come with position_ids restarting at 0 per sample and no attention_mask.
        `loss_only` (training) computes logits at trained positions only and returns no logits;
        with `loss_chunk_tokens` it makes them that many tokens at a time (llavakit.model.loss).
        """
        inputs_embeds = self.embed(
            input_ids, pixel_values, image_sizes, image_features, vision_features
        )
        if position_ids is None and attention_mask is not None and attention_mask.dim() == 2:
            # Positions count real tokens only, so left-padded rows match their unpadded selves.
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        if attention_mask is None and position_ids is not None:
            attention_mask = self._packed_attention_mask(position_ids, inputs_embeds.dtype)
        context = self._highres_context(input_ids, highres_pixel_values, image_sizes, position_ids)
        with self._highres_supplied(context):
            if loss_only and labels is not None:
                return self._trained_positions_loss(
                    inputs_embeds, attention_mask, position_ids, labels, loss_chunk_tokens, **kwargs
                )
            return self.language_model(
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                position_ids=position_ids,
                labels=labels,
                **kwargs,
            )

    # ---- LLaVAR high-res branch ------------------------------------------------------------
    def _highres_context(
        self,
        input_ids: torch.Tensor,
        highres_pixel_values: torch.Tensor | None,
        image_sizes: torch.Tensor | None,
        position_ids: torch.Tensor | None,
    ) -> HighresContext | None:
        """The crops' features placed by row (and packed sample); None without images."""
        is_image = input_ids == self.image_token_id  # [B, T]
        if self.highres is None or not bool(is_image.any()):
            return None
        if highres_pixel_values is None:
            raise HighresError(
                "this model has a high-resolution branch (model.highres) but the batch has no "
                "highres_pixel_values; encode images with the model's own processor"
            )
        n_images = highres_pixel_values.shape[0] // self.highres.crops_per_image
        counts = self.image_token_counts(n_images, image_sizes)
        return self.highres.context(
            highres_pixel_values.to(self.device), is_image, counts, position_ids
        )

    def _highres_supplied(self, context: HighresContext | None):
        if self.highres is None:
            return contextlib.nullcontext()
        return self.highres.supplying(self.language_model, context)

    def image_token_counts(self, n_images: int, image_sizes: torch.Tensor | None) -> list[int]:
        """Placeholders (= feature vectors) of each image, in order."""
        tokens = self.image_tokens()
        if tokens.pinpoints is None:
            return [tokens.count()] * n_images
        if image_sizes is None or len(image_sizes) != n_images:
            raise ValueError(f"AnyRes models need image_sizes for each of the {n_images} images")
        return [tokens.count((height, width)) for height, width in image_sizes.tolist()]

    def image_tokens(self) -> ImageTokens:
        """How many tokens an image becomes in this model (`llavakit.image_tokens`)."""
        tower = self.vision_tower
        return ImageTokens.for_model(
            self.config,
            tower.image_size,
            tower.patch_size,
            tower.num_features,
            newline=self.image_newline is not None,
        )

    def _packed_attention_mask(
        self, position_ids: torch.Tensor, dtype: torch.dtype
    ) -> torch.Tensor | None:
        """A 4-D mask for kernels that need one; None lets flash/flex attention use positions."""
        implementation = getattr(self.language_model.config, "_attn_implementation", "sdpa")
        if implementation not in _DENSE_MASK_ATTENTION:
            return None
        mask = packed_causal_mask(position_ids)
        if mask is None or implementation == "sdpa":
            return mask
        return _additive(mask, dtype)

    def _trained_positions_loss(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        labels: torch.Tensor,
        chunk: int | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Token-mean cross-entropy computed from the trained positions' logits alone.

        Image placeholders, prompts and padding make up most of a LLaVA row, so skipping their
        vocabulary projection (and its float32 logits) saves time and memory; the loss is the
        same as the language model's own. The model's own forward makes the logits, via
        transformers' boolean `logits_to_keep`, so any logit scaling it applies is kept; with
        `chunk`, LMs whose head is a plain projection get them `chunk` tokens at a time instead.
        """
        targets = labels[:, 1:]  # [B, T-1]: position t predicts token t+1
        trained = targets != IGNORE_INDEX
        keep = nn.functional.pad(trained, (0, 1))  # [B, T]
        parts = plain_head_parts(self.language_model) if chunk else None
        if parts is not None:
            decoder, head = parts
            hidden = decoder(
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                position_ids=position_ids,
                **kwargs,
            ).last_hidden_state  # [B, T, D]
            total = chunked_cross_entropy(
                hidden[keep], targets[trained].to(hidden.device), head, chunk
            )
        else:
            if _LOGITS_BY_MASK:
                kwargs["logits_to_keep"] = keep
            outputs = self.language_model(
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                position_ids=position_ids,
                **kwargs,
            )
            logits = outputs.logits if _LOGITS_BY_MASK else outputs.logits[keep]  # [n, V]
            total = nn.functional.cross_entropy(
                logits.float(), targets[trained].to(logits.device), reduction="sum"
            )
        if num_items_in_batch is None:
            num_items_in_batch = trained.sum()
        divisor = torch.as_tensor(num_items_in_batch, device=total.device).clamp(min=1)
        return CausalLMOutputWithPast(loss=total / divisor)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        highres_pixel_values: torch.Tensor | None = None,
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """New token ids only ([B, new]); batches must be left-padded.

        A high-res context is built once from the prompt's images and serves every step.
        """
        inputs_embeds = self.embed(input_ids, pixel_values, image_sizes)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        context = self._highres_context(input_ids, highres_pixel_values, image_sizes, None)
        with self._highres_supplied(context):
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
