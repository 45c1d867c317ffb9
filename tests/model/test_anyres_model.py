"""AnyRes end to end: processor placeholders -> our model, against transformers' LlavaNext.

The feature-level parity lives in test_anyres.py; here a whole llavakit model (built from folders
by `build_model`, images encoded by our processor) must give the logits of transformers'
`LlavaNextForConditionalGeneration` holding the same weights, for a batch of images of different
aspect ratios.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration

from llavakit.config import ModelConfig
from llavakit.data.collate import collate_samples
from llavakit.model.io import build_model, load_checkpoint, save_checkpoint

PINPOINTS = [[32, 64], [64, 32], [64, 64], [32, 96], [96, 32]]
HF_IMAGE_ID = 0  # transformers' LlavaNext needs an id inside the vocabulary (<unk> here)
# wide, tall, square, small, strip: different grids and different unpadding
SIZES = [(40, 90), (90, 40), (70, 70), (12, 20), (20, 150)]


def anyres_config(clip, llm, **changes) -> ModelConfig:
    base = ModelConfig(
        vision_tower=str(clip),
        language_model=str(llm),
        image_aspect_ratio="anyres",
        image_grid_pinpoints=PINPOINTS,
        attn_implementation="eager",
        max_length=512,
    )
    return dataclasses.replace(base, **changes)


def image(size_hw, seed) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size_hw, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def encode(processor, sizes, question="What is written here?"):
    """One sample per image size (one with two images), collated right-padded."""
    samples = []
    for i, size_hw in enumerate(sizes):
        images = [image(size_hw, i)] + ([image((30, 50), 99)] if i == 0 else [])
        tags = "<image>\n" * len(images)
        messages = [
            {"role": "user", "content": f"{tags}{question} {i}"},
            {"role": "assistant", "content": "The sign says hello."},
        ]
        samples.append(processor.encode(messages, images))
    return samples, collate_samples(samples, processor.pad_token_id)


def llava_next_with_our_weights(model) -> LlavaNextForConditionalGeneration:
    llm = model.language_model
    config = LlavaNextConfig(
        vision_config=model.vision_tower.encoder.config.to_dict(),
        text_config=llm.config.to_dict(),
        image_grid_pinpoints=PINPOINTS,
        image_token_index=HF_IMAGE_ID,
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    hf = LlavaNextForConditionalGeneration(config).eval()
    hf.model.vision_tower.load_state_dict(model.vision_tower.encoder.state_dict())
    hf.model.multi_modal_projector.linear_1.load_state_dict(model.projector[0].state_dict())
    hf.model.multi_modal_projector.linear_2.load_state_dict(model.projector[2].state_dict())
    hf.model.image_newline.data.copy_(model.image_newline.data)
    hf.model.language_model.load_state_dict(llm.model.state_dict())
    hf.lm_head.load_state_dict(llm.lm_head.state_dict())
    hf.config._attn_implementation = "eager"
    hf.model.language_model.config._attn_implementation = "eager"
    return hf


def per_image_pixels(samples) -> torch.Tensor:
    """transformers' layout: [n_images, most crops, 3, S, S], each image's crops zero-padded."""
    crops, start = [], 0
    pixels = torch.from_numpy(np.concatenate([s.pixel_values for s in samples]))
    for size_hw in [size for s in samples for size in s.image_sizes]:
        from llavakit.image_tokens import anyres_grid_shape

        rows, cols = anyres_grid_shape(size_hw, [tuple(p) for p in PINPOINTS], 32)
        crops.append(pixels[start : start + 1 + rows * cols])
        start += 1 + rows * cols
    longest = max(c.shape[0] for c in crops)
    return torch.stack([torch.cat([c, c.new_zeros(longest - len(c), *c.shape[1:])]) for c in crops])


def test_anyres_logits_match_llava_next(tiny_clip, tiny_llama):
    torch.manual_seed(0)
    model, processor = build_model(anyres_config(tiny_clip, tiny_llama))
    model.eval()
    samples, batch = encode(processor, SIZES)
    ids = batch["input_ids"]
    assert not (ids == HF_IMAGE_ID).any()
    hf_ids = ids.masked_fill(ids == processor.image_token_id, HF_IMAGE_ID)
    hf = llava_next_with_our_weights(model)
    mask = batch["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        expected = hf(
            input_ids=hf_ids,
            attention_mask=mask,
            position_ids=positions,
            pixel_values=per_image_pixels(samples),
            image_sizes=batch["image_sizes"],
        ).logits
        got = model(
            input_ids=ids,
            attention_mask=mask,
            pixel_values=batch["pixel_values"],
            image_sizes=batch["image_sizes"],
        ).logits
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cap", [None, 1])
def test_feature_counts_equal_placeholders(tiny_clip, tiny_llama, cap):
    model, processor = build_model(anyres_config(tiny_clip, tiny_llama, anyres_max_patches=cap))
    rng = np.random.default_rng(3)
    sizes = SIZES + [tuple(s) for s in rng.integers(5, 300, size=(6, 2)).tolist()]
    capped = False
    for i, size_hw in enumerate(sizes):
        messages = [{"role": "user", "content": "<image>\nRead it."}]
        sample = processor.encode(messages, [image(size_hw, i)], add_generation_prompt=True)
        placeholders = sample.input_ids.count(processor.image_token_id)
        with torch.no_grad():
            features = model.encode_images(
                torch.from_numpy(sample.pixel_values), torch.tensor(sample.image_sizes)
            )
        assert features.shape[0] == placeholders == processor.image_token_count(size_hw)
        uncapped = model.image_token_counts(1, torch.tensor([size_hw]))[0]
        assert uncapped == placeholders  # the model's own count follows the cap too
        if cap is not None:
            no_cap = dataclasses.replace(processor.model_config, anyres_max_patches=None)
            processor_without = type(processor)(
                processor.tokenizer, processor.image_config, no_cap, processor.geometry
            )
            capped |= processor_without.image_token_count(size_hw) > placeholders
    assert cap is None or capped  # the cap really shrank some grid


def test_anyres_max_patches_cap_trains_end_to_end(tiny_clip, tiny_llama):
    model, processor = build_model(anyres_config(tiny_clip, tiny_llama, anyres_max_patches=1))
    _, batch = encode(processor, [(96, 96), (20, 150)])
    out = model(**batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert model.image_newline.grad is not None and model.image_newline.grad.abs().sum() > 0


def test_anyres_checkpoint_round_trip_keeps_pinpoints_and_newline(tmp_path, tiny_clip, tiny_llama):
    config = anyres_config(tiny_clip, tiny_llama, image_grid_pinpoints="(1x1),...,(2x3)")
    model, processor = build_model(config)
    model.eval()
    folder = save_checkpoint(model, processor, tmp_path / "anyres")
    loaded, loaded_processor = load_checkpoint(folder)
    assert loaded.config.image_grid_pinpoints == "(1x1),...,(2x3)"
    assert loaded.config.image_aspect_ratio == "anyres"
    assert torch.equal(loaded.image_newline, model.image_newline)
    assert loaded_processor.pinpoints == processor.pinpoints and len(processor.pinpoints) == 6
    _, batch = encode(loaded_processor, [(40, 90), (64, 32)])
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**batch).logits)
