"""llavakit checkpoints: build from folders, save, load with no other argument, bit-exact."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from PIL import Image

import llavakit
from llavakit.data.collate import collate_samples
from llavakit.model.io import CheckpointError, build_model, save_checkpoint

MESSAGES = [
    {"role": "user", "content": "<image>\nWhat is in the image?"},
    {"role": "assistant", "content": "A red square."},
]


def batch(processor, n_images=1):
    image = Image.new("RGB", (40, 30), (200, 10, 10))
    sample = processor.encode(MESSAGES, [image] * n_images)
    return collate_samples([sample, sample], processor.pad_token_id)


def test_round_trip_is_bit_exact(tmp_path, tiny_model_config):
    model, processor = build_model(tiny_model_config)
    save_checkpoint(model, processor, tmp_path / "ckpt", metadata={"note": "x"})
    loaded, loaded_processor = llavakit.load(tmp_path / "ckpt")
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    inputs = batch(processor)
    assert torch.equal(inputs["input_ids"], batch(loaded_processor)["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, loaded(**inputs).logits, atol=0, rtol=0)
    assert loaded_processor.template.name == "vicuna_v1"
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["model"]["vision_tower"] == "vision_tower"
    assert config["model"]["projector_type"] == "mlp2x_gelu"


def test_projector_only_checkpoint_references_frozen_parts(tmp_path, tiny_model_config):
    model, processor = build_model(tiny_model_config)
    folder = save_checkpoint(
        model, processor, tmp_path / "s1", copy_vision=False, copy_language_model=False
    )
    assert not (folder / "language_model").exists() and not (folder / "vision_tower").exists()
    loaded, _ = llavakit.load(folder)
    torch.testing.assert_close(loaded.projector[0].weight, model.projector[0].weight)


@pytest.mark.parametrize("arch", ["tiny_qwen2", "tiny_gpt2"])
def test_other_llm_architectures_and_siglip(request, tmp_path, tiny_siglip, arch):
    config = dataclasses.replace(
        request.getfixturevalue("tiny_model_config"),
        vision_tower=str(tiny_siglip),
        language_model=str(request.getfixturevalue(arch)),
        projector_type="linear",
    )
    model, processor = build_model(config)
    out = model(**batch(processor))
    assert torch.isfinite(out.loss)
    save_checkpoint(model, processor, tmp_path / "c")
    loaded, _ = llavakit.load(tmp_path / "c")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch(processor)).logits, out.logits)


def test_im_start_end_wraps_features(tiny_model_config):
    config = dataclasses.replace(tiny_model_config, use_im_start_end=True)
    model, processor = build_model(config)
    sample = processor.encode(MESSAGES, [Image.new("RGB", (32, 32))])
    start, end = processor.wrap_ids
    first = sample.input_ids.index(processor.image_token_id)
    n = processor.geometry.features_per_crop
    assert sample.input_ids[first - 1] == start and sample.input_ids[first + n] == end
    embeddings = model.language_model.get_input_embeddings().weight
    assert embeddings.shape[0] > max(start, end)
    assert torch.isfinite(model(**collate_samples([sample], processor.pad_token_id)).loss)


def test_missing_pieces_give_clear_errors(tmp_path, tiny_model_config, tiny_clip):
    model, processor = build_model(tiny_model_config)
    folder = save_checkpoint(model, processor, tmp_path / "c")
    with pytest.raises(CheckpointError, match="not a llavakit checkpoint: no config.json"):
        llavakit.load(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    for weights in (broken / "language_model").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(
        CheckpointError, match="model.safetensors: missing; the checkpoint was saved"
    ):
        llavakit.load(broken)
    (folder / "projector.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing projector.safetensors"):
        llavakit.load(folder)
    no_config = tmp_path / "tower"
    shutil.copytree(tiny_clip, no_config)
    (no_config / "config.json").unlink()
    with pytest.raises(CheckpointError, match="vision tower folder .* has no config.json"):
        build_model(dataclasses.replace(tiny_model_config, vision_tower=str(no_config)))
    with pytest.raises(ValueError, match="unknown projector type 'mlp_x'"):
        build_model(dataclasses.replace(tiny_model_config, projector_type="mlp_x"))
    with pytest.raises(ValueError, match="unknown conversation template 'vicuna_v9'"):
        build_model(dataclasses.replace(tiny_model_config, template="vicuna_v9"))
