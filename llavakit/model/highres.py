"""LLaVAR's high-resolution branch: decoder layers cross-attend to a grid of high-res crops.

The main vision tower sees the whole image at its own resolution (224 or 336 px), too coarse for
small text. Here a second CLIP encoder reads the image at `grid` times that side, as grid x grid
crops of its own input size. The crops' patch features, concatenated (each crop tagged with a
learned embedding, since CLIP's position embeddings repeat in every crop), are the keys and
values of a cross-attention block placed after self-attention in chosen decoder layers:

    h = x + SelfAttention(LN(x))                     the layer's own
    h = h + CrossAttention(LN(h), LN(crops))         added here
    y = h + MLP(LN(h))                               the layer's own

The block's output projection starts at zero, so an untrained branch leaves every logit exactly
as plain LLaVA's, and training grows it from there.

The blocks live outside the language model, whose weights and files stay those of a plain
transformers model, and are attached with forward hooks: any decoder whose layers hand their
keyword arguments on to their self-attention module (`self_attn`: Llama, Qwen2, Mistral...;
`attn`: GPT-2) works without a forked model file. Everything travels as keyword arguments:
`supplying()` adds `highres_context` to the decoder's arguments for one forward or generate call,
the decoder passes it to every layer, a pre-hook on each layer adds the layer's input (the
residual) to what the layer hands its self-attention, and a hook on the self-attention adds the
block's output to the attention output. Gradient checkpointing (non-reentrant, llavakit's
default) replays a layer with the same keyword arguments, so it needs nothing special.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from llavakit.config import HighresSettings
from llavakit.model.vision import VisionTower

CONTEXT_KEY = "highres_context"
RESIDUAL_KEY = "highres_residual"
_ATTENTION_NAMES = ("self_attn", "attn")


class HighresError(ValueError):
    """The high-resolution branch cannot be built or fed as configured."""


@dataclass
class HighresContext:
    """The high-resolution keys of one batch, fixed for a whole forward or generate call."""

    features: torch.Tensor
    """[B, K, C] crop features of each row's images; rows with fewer keys are padded."""
    key_segment: torch.Tensor
    """[B, K] which sample of its row each key belongs to; -1 marks padding keys."""
    token_segment: torch.Tensor | None = None
    """[B, T] which sample of its row each token belongs to (packed rows hold several); None lets
    every token see all of its row's keys (one sample per row, as in generation)."""
    projected: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    """Keys and values each block (by layer) has projected, reused at every decoding step; only
    filled without autograd, so a training step never keeps a graph here."""

    def allowed(self, n_tokens: int) -> torch.Tensor:
        """[B, T, K] True where a token may attend to a key."""
        valid = self.key_segment >= 0  # [B, K]
        if self.token_segment is None:
            return valid[:, None, :].expand(-1, n_tokens, -1)
        if self.token_segment.shape[1] != n_tokens:
            raise HighresError(
                f"the high-res context was built for {self.token_segment.shape[1]} tokens per "
                f"row, but a layer sees {n_tokens}"
            )
        same = self.token_segment[:, :, None] == self.key_segment[:, None, :]  # [B, T, K]
        return same & valid[:, None, :]


class CrossAttentionBlock(nn.Module):
    """Pre-LayerNorm multi-head cross-attention from the residual stream to the crop features.

    The output projection is zero-initialised: until it learns, the block adds exactly nothing.
    """

    def __init__(self, hidden_size: int, context_size: int, num_heads: int):
        super().__init__()
        if hidden_size % num_heads:
            raise HighresError(
                f"cross-attention heads ({num_heads}) must divide the hidden size {hidden_size}"
            )
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(hidden_size)
        self.context_norm = nn.LayerNorm(context_size)
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(context_size, hidden_size)
        self.value = nn.Linear(context_size, hidden_size)
        self.output = nn.Linear(hidden_size, hidden_size)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape  # [B, L, D] -> [B, H, L, D / H]
        return x.view(batch, length, self.num_heads, dim // self.num_heads).transpose(1, 2)

    def _keys_values(
        self, context: HighresContext, layer: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if layer in context.projected:
            return context.projected[layer]
        crops = self.context_norm(context.features.to(self.key.weight.dtype))  # [B, K, C]
        keys_values = self._split_heads(self.key(crops)), self._split_heads(self.value(crops))
        if not torch.is_grad_enabled():
            context.projected[layer] = keys_values
        return keys_values

    def forward(self, hidden: torch.Tensor, context: HighresContext, layer: int) -> torch.Tensor:
        """What to add to the residual stream. hidden: [B, T, D] -> [B, T, D]"""
        batch, length, dim = hidden.shape
        keys, values = self._keys_values(context, layer)  # [Bc, H, K, D / H]
        allowed = context.allowed(length)  # [Bc, T, K]
        if batch != keys.shape[0]:
            # generate(num_return_sequences=n) repeats each row n times, consecutively.
            if batch % keys.shape[0]:
                raise HighresError(
                    f"the high-res context has {keys.shape[0]} rows but the batch has {batch}"
                )
            repeats = batch // keys.shape[0]
            keys, values, allowed = (
                t.repeat_interleave(repeats, dim=0) for t in (keys, values, allowed)
            )
        has_key = allowed.any(dim=-1, keepdim=True)  # [B, T, 1]
        # A token with nothing to see (text-only sample, padding) attends anywhere; zeroed below.
        mask = (allowed | ~has_key)[:, None]  # [B, 1, T, K]
        queries = self._split_heads(self.query(self.norm(hidden.to(self.query.weight.dtype))))
        attended = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask)
        attended = attended.transpose(1, 2).reshape(batch, length, dim)
        return (self.output(attended) * has_key).to(hidden.dtype)


class _PassResidual:
    """Decoder-layer pre-hook: hand the layer's input (the residual) on to its self-attention."""

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict):
        if kwargs.get(CONTEXT_KEY) is None:
            return None
        residual = args[0] if args else kwargs["hidden_states"]
        return args, {**kwargs, RESIDUAL_KEY: residual}


class _AddCrossAttention:
    """Self-attention forward hook: attention output + the block's update of (residual + it)."""

    def __init__(self, block: CrossAttentionBlock, layer: int):
        self.block = block
        self.layer = layer

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict, output):
        context = kwargs.get(CONTEXT_KEY)
        if context is None:
            return None
        attention = output[0] if isinstance(output, tuple) else output  # [B, T, D]
        update = self.block(kwargs[RESIDUAL_KEY] + attention, context, self.layer)
        if isinstance(output, tuple):
            return (attention + update, *output[1:])
        return attention + update


class _SupplyContext:
    """Decoder pre-hook: add the batch's high-res context to the decoder's keyword arguments."""

    def __init__(self, context: HighresContext):
        self.context = context

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict):
        return args, {**kwargs, CONTEXT_KEY: self.context}


def decoder_layers(language_model: nn.Module) -> tuple[nn.Module, nn.ModuleList]:
    """The decoder (the module that runs the layers) and its list of layers."""
    decoder = language_model.get_decoder()
    for name in ("layers", "h"):
        layers = getattr(decoder, name, None)
        if isinstance(layers, nn.ModuleList):
            return decoder, layers
    raise HighresError(
        f"cannot find the decoder layers of {type(language_model).__name__} (looked for "
        "`layers` and `h` on its decoder); the high-res branch needs one of those"
    )


def _self_attention(layer: nn.Module, index: int) -> nn.Module:
    for name in _ATTENTION_NAMES:
        module = getattr(layer, name, None)
        if isinstance(module, nn.Module):
            return module
    raise HighresError(
        f"decoder layer {index} ({type(layer).__name__}) has no self-attention module named "
        f"{' or '.join(_ATTENTION_NAMES)}"
    )


def resolve_layers(settings: HighresSettings, n_layers: int) -> list[int]:
    """The decoder layers that get a block, checked against the model's layer count."""
    if settings.layers is None:
        if settings.every < 1:
            raise HighresError(f"highres.every must be >= 1, got {settings.every}")
        return list(range(0, n_layers, settings.every))
    layers = sorted(set(settings.layers))
    if not layers or layers[0] < 0 or layers[-1] >= n_layers:
        raise HighresError(
            f"highres.layers {settings.layers} must be a non-empty list of layer indices in "
            f"0..{n_layers - 1}"
        )
    return layers


class HighresBranch(nn.Module):
    """The high-res encoder, the crop embeddings and the cross-attention blocks of one model.

    `source` names the folder the encoder came from (None: a copy of the main tower), so a
    checkpoint that does not copy the frozen encoder can reference it.
    """

    def __init__(
        self,
        settings: HighresSettings,
        encoder: VisionTower,
        blocks: dict[int, CrossAttentionBlock],
        source: str | None,
    ):
        super().__init__()
        self.settings = settings
        self.encoder = encoder
        self.source = source
        self.crop_position = nn.Parameter(torch.zeros(settings.grid**2, encoder.hidden_size))
        self.blocks = nn.ModuleDict({str(layer): block for layer, block in blocks.items()})
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []

    @property
    def crops_per_image(self) -> int:
        return self.settings.grid**2

    def attach(self, language_model: nn.Module) -> None:
        """Hook every block into its decoder layer (once; the LLM's own modules are unchanged)."""
        if self._hooks:
            raise HighresError("the high-res branch is already attached to a language model")
        _, layers = decoder_layers(language_model)
        for key, block in self.blocks.items():
            index = int(key)
            if index >= len(layers):
                raise HighresError(
                    f"a cross-attention block is set for layer {index} but the language model "
                    f"has {len(layers)} layers"
                )
            layer = layers[index]
            attention = _self_attention(layer, index)
            self._hooks.append(layer.register_forward_pre_hook(_PassResidual(), with_kwargs=True))
            self._hooks.append(
                attention.register_forward_hook(_AddCrossAttention(block, index), with_kwargs=True)
            )

    @contextmanager
    def supplying(
        self, language_model: nn.Module, context: HighresContext | None
    ) -> Iterator[None]:
        """Within the block, every decoder call of `language_model` sees `context`."""
        if context is None:
            yield
            return
        decoder, _ = decoder_layers(language_model)
        handle = decoder.register_forward_pre_hook(_SupplyContext(context), with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()

    def set_trainable(self, trainable: bool) -> None:
        """Blocks and crop embeddings learn; the high-res encoder stays frozen."""
        self.blocks.requires_grad_(trainable)
        self.crop_position.requires_grad_(trainable)

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint stores (the encoder is saved, or referenced, as an HF folder)."""
        state = {f"blocks.{k}": v for k, v in self.blocks.state_dict().items()}
        state["crop_position"] = self.crop_position.data
        return state

    def load_trained_state_dict(self, state: dict[str, torch.Tensor], where: str) -> None:
        if "crop_position" not in state:
            raise HighresError(f"{where}: no crop_position in the high-res weights")
        if state["crop_position"].shape != self.crop_position.shape:
            raise HighresError(
                f"{where}: crop_position is {tuple(state['crop_position'].shape)}, the model "
                f"needs {tuple(self.crop_position.shape)} (grid {self.settings.grid})"
            )
        blocks = {k[len("blocks.") :]: v for k, v in state.items() if k.startswith("blocks.")}
        try:
            self.blocks.load_state_dict(blocks)
        except RuntimeError as error:
            raise HighresError(f"{where}: cross-attention weights do not fit: {error}") from None
        self.crop_position.data.copy_(state["crop_position"])

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Each image's crop features, concatenated and tagged by crop.

        pixel_values: [n_images * grid^2, 3, S, S], each image's crops row-major
        returns: [n_images, grid^2 * N, C]
        """
        if pixel_values.shape[0] % self.crops_per_image:
            raise HighresError(
                f"{pixel_values.shape[0]} high-res crops is not a whole number of "
                f"{self.settings.grid}x{self.settings.grid} grids"
            )
        features = self.encoder(pixel_values)  # [n * G^2, N, C]
        crops, n_patches, dim = features.shape
        features = features.view(
            crops // self.crops_per_image, self.crops_per_image, n_patches, dim
        )
        features = features + self.crop_position.to(features.dtype)[None, :, None, :]
        return features.reshape(features.shape[0], -1, dim)

    def context(
        self,
        pixel_values: torch.Tensor,
        is_image: torch.Tensor,
        image_token_counts: list[int],
        position_ids: torch.Tensor | None,
    ) -> HighresContext:
        """The batch's context: each image's crop features go to the row (and sample) whose
        placeholders it fills.

        pixel_values: high-res crops of every image in order; is_image: [B, T] placeholder mask;
        image_token_counts: placeholders of each image in order (they fill the mask row-major);
        position_ids: [B, T] restarting at 0 per sample (packed rows), or None (one per row).
        """
        features = self.encode(pixel_values)  # [n, K1, C]
        n_images, per_image, dim = features.shape
        if n_images != len(image_token_counts) or sum(image_token_counts) != int(is_image.sum()):
            raise HighresError(
                f"{n_images} high-res images for {len(image_token_counts)} images holding "
                f"{sum(image_token_counts)} placeholders; the batch has {int(is_image.sum())}"
            )
        segments = None if position_ids is None else (position_ids == 0).long().cumsum(dim=1)
        rows, cols = is_image.nonzero(as_tuple=True)  # row-major: the order features fill
        starts = torch.tensor([0] + image_token_counts[:-1], device=rows.device).cumsum(0)
        owner_rows = rows[starts].tolist()
        owner_segments = (
            [0] * n_images if segments is None else segments[rows[starts], cols[starts]].tolist()
        )
        batch = is_image.shape[0]
        per_row = [owner_rows.count(row) for row in range(batch)]
        context = features.new_zeros(batch, max(per_row) * per_image, dim)
        key_segment = torch.full(context.shape[:2], -1, dtype=torch.long, device=context.device)
        filled = [0] * batch
        for image, (row, segment) in enumerate(zip(owner_rows, owner_segments)):
            span = slice(filled[row], filled[row] + per_image)
            context[row, span] = features[image]
            key_segment[row, span] = segment
            filled[row] += per_image
        return HighresContext(context, key_segment, segments)


def build_highres(
    settings: HighresSettings,
    main_tower: VisionTower,
    language_model: nn.Module,
    dtype: torch.dtype,
) -> tuple[HighresBranch, HighresSettings]:
    """A fresh branch for this language model, and the settings with layers and heads resolved."""
    if settings.grid < 1:
        raise HighresError(f"highres.grid must be >= 1, got {settings.grid}")
    if settings.encoder:
        encoder = VisionTower.from_pretrained(
            settings.encoder, settings.select_layer, "patch", dtype=dtype
        )
    else:
        encoder = VisionTower(copy.deepcopy(main_tower.encoder), settings.select_layer, "patch")
    encoder.requires_grad_(False)
    _, layers = decoder_layers(language_model)
    hidden = language_model.get_input_embeddings().embedding_dim
    heads = settings.num_heads or language_model.config.num_attention_heads
    resolved = dataclasses.replace(
        settings, layers=resolve_layers(settings, len(layers)), num_heads=heads
    )
    blocks = {
        layer: CrossAttentionBlock(hidden, encoder.hidden_size, heads) for layer in resolved.layers
    }
    branch = HighresBranch(resolved, encoder, blocks, settings.encoder or None)
    branch.blocks.to(dtype)
    branch.crop_position.data = branch.crop_position.data.to(dtype)
    return branch, resolved
