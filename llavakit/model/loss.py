"""Chunked vocabulary cross-entropy: the training loss without a [tokens, vocab] logits tensor.

The float32 logits of every trained token are the largest activation of a LLaVA step when the
vocabulary is big: 16K trained tokens x Qwen2's 152K vocabulary is 10 GB, and its gradient as
much again. Projecting `chunk` trained tokens at a time and recomputing each chunk's logits in
backward (activation checkpointing) keeps at most one chunk of logits alive; the loss and the
gradients are the same.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

PLAIN_HEAD_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gpt2", "phi3"})
"""Causal LMs whose logits are exactly `lm_head(decoder(...).last_hidden_state)`: no logit
scaling or soft-capping that a chunked projection would skip (Gemma-2, Cohere, Granite have)."""


def plain_head_parts(language_model) -> tuple[nn.Module, nn.Module] | None:
    """(decoder, lm_head) when the model's logits are a plain projection, else None."""
    if getattr(language_model.config, "model_type", None) not in PLAIN_HEAD_MODEL_TYPES:
        return None
    head = language_model.get_output_embeddings()
    if not isinstance(head, nn.Linear):
        return None
    return language_model.get_decoder(), head


def chunked_cross_entropy(
    hidden: torch.Tensor, targets: torch.Tensor, head: nn.Linear, chunk: int
) -> torch.Tensor:
    """Summed cross-entropy of `head(hidden)` against `targets`, `chunk` rows at a time.

    hidden: [N, D] final hidden states of the trained positions; targets: [N] token ids.
    returns: a float32 scalar (the sum; the caller divides by the token count).
    """
    if chunk < 1:
        raise ValueError(f"loss chunk must be >= 1 token (train.loss_chunk_tokens), got {chunk}")
    if hidden.shape[0] <= chunk or not torch.is_grad_enabled():
        return _summed_loss(hidden, targets, head)  # one chunk: nothing to gain by recomputing
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk):
        piece, wanted = hidden[start : start + chunk], targets[start : start + chunk]
        total = total + checkpoint(_summed_loss, piece, wanted, head, use_reentrant=False)
    return total


def _summed_loss(hidden: torch.Tensor, targets: torch.Tensor, head: nn.Linear) -> torch.Tensor:
    logits = head(hidden).float()  # [chunk, V]
    return nn.functional.cross_entropy(logits, targets, reduction="sum")
