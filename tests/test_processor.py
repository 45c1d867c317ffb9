"""Placeholder expansion, truncation and image/tag agreement in the processor."""

from __future__ import annotations

import dataclasses

import pytest
from PIL import Image

from llavakit.model.io import build_model
from llavakit.processor import IGNORE_INDEX, SampleError

RED = Image.new("RGB", (40, 30), (200, 10, 10))


@pytest.fixture(scope="module")
def processor(tiny_model_config):
    return build_model(tiny_model_config)[1]


def conversation(n_images=1, answer="A red square."):
    tags = "<image>\n" * n_images
    return [
        {"role": "user", "content": f"{tags}What is in the image?"},
        {"role": "assistant", "content": answer},
    ]


def test_each_image_tag_becomes_its_feature_count(processor):
    sample = processor.encode(conversation(2), [RED, RED])
    n = processor.geometry.features_per_crop
    assert sample.input_ids.count(processor.image_token_id) == 2 * n
    assert sample.pixel_values.shape == (2, 3, 32, 32)
    assert sample.image_sizes == [(30, 40), (30, 40)]
    image_positions = [i for i, t in enumerate(sample.input_ids) if t == processor.image_token_id]
    assert all(sample.labels[i] == IGNORE_INDEX for i in image_positions)
    trained = [t for t, label in zip(sample.input_ids, sample.labels) if label != IGNORE_INDEX]
    assert processor.decode(trained, skip_special_tokens=False) == " A red square.</s>"


def test_tag_and_image_counts_must_agree(processor):
    with pytest.raises(SampleError, match=r"2 <image> tag\(s\) but 1 image"):
        processor.encode(conversation(2), [RED])
    with pytest.raises(SampleError, match=r"0 <image> tag\(s\) but 1 image"):
        processor.encode(conversation(0), [RED])


def test_truncation_never_cuts_inside_an_image(processor):
    two_turns = conversation(1) + [
        {"role": "user", "content": "<image>\nAnd this one?"},
        {"role": "assistant", "content": "A blue one."},
    ]
    full = processor.encode(two_turns, [RED, RED])
    positions = [i for i, t in enumerate(full.input_ids) if t == processor.image_token_id]
    second_start = positions[16]
    sample = processor.encode(two_turns, [RED, RED], max_length=second_start + 5)
    assert sample.truncated
    assert len(sample.input_ids) == second_start  # cut before the image, not inside it
    assert len(sample.image_sizes) == 1 and sample.pixel_values.shape[0] == 1
    assert sample.input_ids.count(processor.image_token_id) == 16
    trained = [t for t, label in zip(sample.input_ids, sample.labels) if label != IGNORE_INDEX]
    assert processor.decode(trained, skip_special_tokens=False) == " A red square.</s>"


def test_all_answers_truncated_is_reported(processor):
    with pytest.raises(SampleError, match="every answer token lies beyond max_length=20"):
        processor.encode(conversation(1), [RED], max_length=20)


def test_long_answers_are_truncated_not_dropped(processor):
    sample = processor.encode(conversation(1, answer="yes " * 200), [RED], max_length=100)
    assert sample.truncated and len(sample.input_ids) == 100
    assert any(label != IGNORE_INDEX for label in sample.labels)


def test_generation_prompt_is_a_prefix_of_training_ids(processor):
    full = processor.encode(conversation(1), [RED])
    prompt = processor.encode(conversation(1)[:1], [RED], add_generation_prompt=True)
    assert full.input_ids[: len(prompt.input_ids)] == prompt.input_ids
    assert processor.decode(prompt.input_ids, skip_special_tokens=False).endswith(" ASSISTANT:")


def test_prompt_batch_is_left_padded(tiny_model_config):
    _, processor = build_model(dataclasses.replace(tiny_model_config, template="llava_v0"))
    short = [{"role": "user", "content": "<image>\nHi"}]
    long = [{"role": "user", "content": "<image>\nWhat colour is the square in this image?"}]
    batch = processor.prompt_batch([short, long], [[RED], [RED]])
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][0, -1] == 1
    assert batch["pixel_values"].shape[0] == 2


def test_prompt_longer_than_max_length_is_refused(processor):
    long_question = [{"role": "user", "content": "<image>\n" + "word " * 300}]
    with pytest.raises(SampleError, match="longer than the model's max_length=128"):
        processor.encode(long_question, [RED], add_generation_prompt=True)
