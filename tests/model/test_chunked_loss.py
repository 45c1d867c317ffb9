"""Chunked vocabulary cross-entropy: the same loss and gradients, never more than a chunk of logits."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from llavakit.config import DataConfig, DataSource
from llavakit.data.collate import PackingCollator
from llavakit.data.dataset import LlavaDataset, load_entries
from llavakit.model import loss as chunked
from llavakit.model.io import build_model
from llavakit.processor import IGNORE_INDEX


def _model_and_batch(tiny_model_config, tiny_data, llm):
    config = dataclasses.replace(tiny_model_config, language_model=str(llm))
    torch.manual_seed(0)
    model, processor = build_model(config)
    model.language_model.requires_grad_(True)
    entries, _ = load_entries(
        DataConfig(
            train=[DataSource(path=str(tiny_data["instruct"]))],
            image_folder=str(tiny_data["images"]),
        )
    )
    dataset = LlavaDataset(entries, processor, config.max_length)
    samples = [dataset[i] for i in (0, 1, len(dataset) - 1, 2)]
    return model.eval(), PackingCollator(processor.pad_token_id, 300)(samples)


def _loss_and_grads(model, batch, chunk):
    model.zero_grad()
    out = model(**batch, loss_only=True, loss_chunk_tokens=chunk)
    out.loss.backward()
    head = model.language_model.get_output_embeddings().weight
    return out.loss.detach(), model.projector[0].weight.grad.clone(), head.grad.clone()


@pytest.mark.parametrize("llm", ["tiny_llama", "tiny_qwen2", "tiny_gpt2"])
def test_chunks_give_the_one_shot_loss_and_gradients(
    request, monkeypatch, tiny_model_config, tiny_data, llm
):
    model, batch = _model_and_batch(tiny_model_config, tiny_data, request.getfixturevalue(llm))
    n_trained = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert n_trained > 10
    seen = []
    original = chunked._summed_loss

    def recording(hidden, targets, head):
        seen.append(hidden.shape[0])
        return original(hidden, targets, head)

    monkeypatch.setattr(chunked, "_summed_loss", recording)
    one_shot = _loss_and_grads(model, batch, None)
    assert seen == []  # no chunk size: the model's own head made the logits
    split = _loss_and_grads(model, batch, 7)
    # Every chunk holds at most 7 tokens; backward recomputes each one once.
    assert max(seen) == 7 and sum(seen) == 2 * n_trained
    for fast, slow in zip(split, one_shot):
        torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    seen.clear()
    whole = _loss_and_grads(model, batch, n_trained)  # one chunk: computed once, not recomputed
    assert seen == [n_trained]
    torch.testing.assert_close(whole[0], one_shot[0], rtol=1e-5, atol=1e-6)


def test_unlisted_heads_keep_the_one_shot_projection(
    monkeypatch, tiny_model_config, tiny_data, tiny_llama
):
    model, batch = _model_and_batch(tiny_model_config, tiny_data, tiny_llama)
    expected = _loss_and_grads(model, batch, None)
    monkeypatch.setattr(chunked, "PLAIN_HEAD_MODEL_TYPES", frozenset())
    monkeypatch.setattr(chunked, "_summed_loss", None)  # would fail if called
    got = _loss_and_grads(model, batch, 7)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)


def test_chunk_must_be_positive():
    head = torch.nn.Linear(4, 10)
    with pytest.raises(ValueError, match="loss chunk must be >= 1 token"):
        chunked.chunked_cross_entropy(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long), head, 0)
