"""The splice: vision tower -> projector -> LLM embeddings, against transformers' own LLaVA."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, LlavaConfig, LlavaForConditionalGeneration

from llavakit.config import ModelConfig
from llavakit.model.llava import ImageTokenMismatch, LlavaModel
from llavakit.model.projector import build_projector
from llavakit.model.vision import VisionTower, VisionTowerError

IMAGE_ID = 0  # any id works for us; transformers' LLaVA needs one inside the vocabulary


def make_model(vision_dir, llm_dir, projector="mlp2x_gelu", select_feature="patch"):
    torch.manual_seed(0)
    tower = VisionTower.from_pretrained(vision_dir, -2, select_feature)
    llm = AutoModelForCausalLM.from_pretrained(str(llm_dir), attn_implementation="eager")
    proj = build_projector(projector, tower.hidden_size, llm.get_input_embeddings().embedding_dim)
    config = ModelConfig(projector_type=projector, vision_select_feature=select_feature)
    return LlavaModel(config, tower, proj, llm, IMAGE_ID).eval()


def batch_with_images(n_features: int, padding_side: str):
    """Two samples: one with two images, one with one image; padded to equal length."""
    torch.manual_seed(1)
    text = lambda n: torch.randint(5, 300, (n,)).tolist()  # noqa: E731
    img = [IMAGE_ID] * n_features
    rows = [text(3) + img + text(4) + img + text(2), text(5) + img + text(6)]
    longest = max(map(len, rows))
    ids = torch.full((2, longest), 3)
    mask = torch.zeros((2, longest), dtype=torch.long)
    for r, row in enumerate(rows):
        cols = slice(longest - len(row), longest) if padding_side == "left" else slice(0, len(row))
        ids[r, cols] = torch.tensor(row)
        mask[r, cols] = 1
    pixels = torch.randn(3, 3, 32, 32)
    return ids, mask, pixels


def test_vision_tower_selects_penultimate_patches(tiny_clip, tiny_siglip):
    clip = VisionTower.from_pretrained(tiny_clip, -2, "patch")
    pixels = torch.randn(2, 3, 32, 32)
    out = clip(pixels)
    assert out.shape == (2, 16, 24)
    full = clip.encoder(pixels, output_hidden_states=True).hidden_states[-2]
    torch.testing.assert_close(out, full[:, 1:])
    with_cls = VisionTower.from_pretrained(tiny_clip, -2, "cls_patch")
    assert with_cls(pixels).shape == (2, 17, 24) and with_cls.num_features == 17
    siglip = VisionTower.from_pretrained(tiny_siglip, -1, "patch")
    assert siglip(pixels).shape == (2, 16, 24) and siglip.num_features == 16


def test_vision_tower_errors(tmp_path, tiny_clip):
    with pytest.raises(VisionTowerError, match="has no config.json"):
        VisionTower.from_pretrained(tmp_path)
    with pytest.raises(VisionTowerError, match="unknown vision select feature"):
        VisionTower.from_pretrained(tiny_clip, -2, "cls")
    with pytest.raises(VisionTowerError, match="out of range"):
        VisionTower.from_pretrained(tiny_clip, -9)


def test_projector_types():
    assert isinstance(build_projector("linear", 8, 16), torch.nn.Linear)
    mlp3 = build_projector("mlp3x_gelu", 8, 16)
    assert [type(m).__name__ for m in mlp3] == ["Linear", "GELU", "Linear", "GELU", "Linear"]
    assert build_projector("identity", 16, 16)(torch.ones(2, 16)).sum() == 32
    with pytest.raises(ValueError, match="unknown projector type 'mlp'"):
        build_projector("mlp", 8, 16)
    with pytest.raises(ValueError, match="identity projector needs equal widths"):
        build_projector("identity", 8, 16)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_logits_match_transformers_llava(tiny_clip, tiny_llama, padding_side):
    ours = make_model(tiny_clip, tiny_llama)
    llm = ours.language_model
    hf_config = LlavaConfig(
        vision_config=ours.vision_tower.encoder.config.to_dict(),
        text_config=llm.config.to_dict(),
        image_token_id=IMAGE_ID,
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    hf = LlavaForConditionalGeneration(hf_config).eval()
    hf.model.vision_tower.load_state_dict(ours.vision_tower.encoder.state_dict())
    hf.model.multi_modal_projector.linear_1.load_state_dict(ours.projector[0].state_dict())
    hf.model.multi_modal_projector.linear_2.load_state_dict(ours.projector[2].state_dict())
    hf.model.language_model.load_state_dict(llm.model.state_dict())
    hf.lm_head.load_state_dict(llm.lm_head.state_dict())
    hf.config._attn_implementation = "eager"
    hf.model.language_model.config._attn_implementation = "eager"

    ids, mask, pixels = batch_with_images(ours.vision_tower.num_features, padding_side)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        expected = hf(
            input_ids=ids, attention_mask=mask, pixel_values=pixels, position_ids=positions
        ).logits
        got = ours(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_qwen2", "tiny_gpt2"])
def test_padded_batch_equals_single_samples(request, tiny_clip, arch):
    model = make_model(tiny_clip, request.getfixturevalue(arch))
    n = model.vision_tower.num_features
    ids, mask, pixels = batch_with_images(n, "left")
    with torch.no_grad():
        batched = model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
        for row, crops in ((0, pixels[:2]), (1, pixels[2:])):
            keep = mask[row].bool()
            single = model(input_ids=ids[row, keep][None], pixel_values=crops).logits[0]
            torch.testing.assert_close(batched[row, keep], single, atol=1e-5, rtol=1e-4)


def test_text_only_and_mixed_batches(tiny_clip, tiny_llama):
    model = make_model(tiny_clip, tiny_llama)
    ids = torch.randint(5, 300, (2, 7))
    out = model(input_ids=ids, labels=ids)
    assert out.logits.shape[:2] == (2, 7) and torch.isfinite(out.loss)


def test_placeholder_count_mismatch_names_samples(tiny_clip, tiny_llama):
    model = make_model(tiny_clip, tiny_llama)
    ids, mask, pixels = batch_with_images(model.vision_tower.num_features, "right")
    with pytest.raises(ImageTokenMismatch, match=r"placeholders per sample: \[32, 16\]"):
        model(input_ids=ids, attention_mask=mask, pixel_values=pixels[:2])
    with pytest.raises(
        ImageTokenMismatch, match="48 image placeholder tokens but the images give 0"
    ):
        model(input_ids=ids, attention_mask=mask)


def test_kv_cache_generation_equals_full_recomputation(tiny_clip, tiny_llama):
    model = make_model(tiny_clip, tiny_llama)
    ids, mask, pixels = batch_with_images(model.vision_tower.num_features, "left")
    new = model.generate(
        input_ids=ids,
        attention_mask=mask,
        pixel_values=pixels,
        max_new_tokens=6,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=3,
    )
    assert new.shape == (2, 6)
    # Recompute without cache: append argmax token by token through the full forward.
    seq, seq_mask = ids.clone(), mask.clone()
    with torch.no_grad():
        for step in range(6):
            logits = model(input_ids=seq, attention_mask=seq_mask, pixel_values=pixels).logits
            nxt = logits[:, -1].argmax(-1)
            assert torch.equal(nxt, new[:, step]), f"step {step}"
            seq = torch.cat([seq, nxt[:, None]], 1)
            seq_mask = torch.cat([seq_mask, torch.ones(2, 1, dtype=torch.long)], 1)


def test_frozen_tower_builds_no_graph(tiny_clip, tiny_llama):
    model = make_model(tiny_clip, tiny_llama)
    model.vision_tower.requires_grad_(False)
    features = model.vision_tower(torch.randn(1, 3, 32, 32))
    assert features.grad_fn is None
    model.vision_tower.requires_grad_(True)
    assert model.vision_tower(torch.randn(1, 3, 32, 32)).grad_fn is not None
