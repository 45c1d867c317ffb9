"""Multimodal packing: rows of several samples train exactly like one sample per row."""

from __future__ import annotations

import dataclasses
import json

import pytest
import tiny
import torch

from llavakit.config import ConfigError, DataConfig, DataSource
from llavakit.data.collate import Collator, PackingCollator, first_fit_decreasing
from llavakit.data.dataset import LlavaDataset, load_entries
from llavakit.model import llava
from llavakit.model.io import build_model
from llavakit.processor import IGNORE_INDEX
from llavakit.train.run import train, training_collator

PACK_LENGTH = 300


def test_first_fit_decreasing_fills_rows_longest_first():
    lengths = [5, 3, 7, 2, 4, 1]
    assert first_fit_decreasing(lengths, 8) == [[2, 5], [0, 1], [4, 3]]
    assert first_fit_decreasing([4, 4, 4], 12) == [[0, 1, 2]]
    with pytest.raises(ValueError, match="sample 1 has 9 tokens, more than the packing length 8"):
        first_fit_decreasing([3, 9], 8)


def _model_and_samples(tiny_model_config, tiny_data, llm, attn):
    config = dataclasses.replace(
        tiny_model_config, language_model=str(llm), attn_implementation=attn
    )
    model, processor = build_model(config)
    entries, _ = load_entries(
        DataConfig(
            train=[DataSource(path=str(tiny_data["instruct"]))],
            image_folder=str(tiny_data["images"]),
        )
    )
    dataset = LlavaDataset(entries, processor, config.max_length)
    samples = [dataset[i] for i in (0, 1, len(dataset) - 1, 2, 3)]  # index -1 is text-only
    return model.eval(), processor, samples


@pytest.mark.parametrize(
    "llm, attn",
    [("tiny_llama", "sdpa"), ("tiny_gpt2", "eager")],  # GPT-2: learned positions
)
def test_packed_rows_equal_unpacked_samples(request, tiny_model_config, tiny_data, llm, attn):
    model, processor, samples = _model_and_samples(
        tiny_model_config, tiny_data, request.getfixturevalue(llm), attn
    )
    packed = PackingCollator(processor.pad_token_id, PACK_LENGTH)(samples)
    padded = Collator(processor.pad_token_id)(samples)
    rows = first_fit_decreasing([len(s.input_ids) for s in samples], PACK_LENGTH)
    assert len(rows) < len(samples) and packed["input_ids"].shape[0] == len(rows)
    assert torch.equal(
        packed["pixel_values"].sum((1, 2, 3)).sort().values,
        padded["pixel_values"].sum((1, 2, 3)).sort().values,
    )
    with torch.no_grad():
        unpacked_loss = model(**padded).loss
        packed_out = model(**packed)
        packed_loss_only = model(**packed, loss_only=True).loss
    # Token mean over the same trained tokens, whichever way they were laid out.
    torch.testing.assert_close(packed_out.loss, unpacked_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(packed_loss_only, unpacked_loss, rtol=1e-5, atol=1e-6)
    for r, row in enumerate(rows):
        start = 0
        for index in row:
            sample = samples[index]
            n = len(sample.input_ids)
            alone = Collator(processor.pad_token_id)([sample])
            with torch.no_grad():
                expected = model(**alone).logits[0]
            torch.testing.assert_close(
                packed_out.logits[r, start : start + n], expected, atol=1e-5, rtol=1e-4
            )
            # The sample's first label is masked: nothing is trained across the boundary.
            assert packed["labels"][r, start] == IGNORE_INDEX
            assert packed["labels"][r, start + 1 : start + n].tolist() == sample.labels[1:]
            start += n


@pytest.mark.parametrize("logits_by_mask", [True, False])  # False: older transformers
def test_trained_logits_only_loss_and_gradients_match(
    monkeypatch, tiny_model_config, tiny_data, tiny_llama, logits_by_mask
):
    monkeypatch.setattr(llava, "_LOGITS_BY_MASK", logits_by_mask)
    model, processor, samples = _model_and_samples(tiny_model_config, tiny_data, tiny_llama, "sdpa")
    batch = Collator(processor.pad_token_id)(samples)
    n_items = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()) + 7  # as if accumulating
    results = []
    for loss_only in (False, True):
        model.zero_grad()
        out = model(**batch, num_items_in_batch=n_items, loss_only=loss_only)
        out.loss.backward()
        results.append((out, model.projector[0].weight.grad.clone()))
    (full, full_grad), (fast, fast_grad) = results
    assert full.logits.shape[:2] == batch["input_ids"].shape and fast.logits is None
    torch.testing.assert_close(fast.loss, full.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast_grad, full_grad, rtol=1e-4, atol=1e-7)


def _instruct_recipe(tiny_model_config, tiny_data, out, **train_fields):
    return tiny.tiny_recipe(
        tiny_model_config,
        tiny_data,
        out,
        "instruct",
        per_device_batch_size=6,
        max_steps=3,
        **train_fields,
    )


def test_packed_training_follows_the_unpacked_loss_curve(tmp_path, tiny_model_config, tiny_data):
    curves = []
    for name, packing in (("padded", False), ("packed", True)):
        recipe = _instruct_recipe(
            tiny_model_config, tiny_data, tmp_path / name, packing=packing, packing_length=400
        )
        folder = train(recipe)
        history = json.loads((folder / "loss_history.json").read_text())
        curves.append([point["loss"] for point in history])
    padded, packed = curves
    assert len(padded) == len(packed) == 3
    for a, b in zip(padded, packed):
        assert abs(a - b) < 1e-3 * a, (padded, packed)


def test_packing_length_must_hold_the_longest_sample(tmp_path, tiny_model_config, tiny_data):
    recipe = _instruct_recipe(
        tiny_model_config, tiny_data, tmp_path, packing=True, packing_length=64
    )
    _, processor = build_model(tiny_model_config)
    with pytest.raises(
        ConfigError, match=r"packing_length \(64\) is shorter than model.max_length"
    ):
        training_collator(recipe, processor)
    recipe.train.packing_length = None
    assert training_collator(recipe, processor).max_length == tiny_model_config.max_length
