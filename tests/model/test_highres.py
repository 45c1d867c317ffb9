"""LLaVAR's high-resolution branch: cross-attention blocks hooked into transformers' decoders."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import tiny
import torch
from PIL import Image
from safetensors.torch import load_file

import llavakit
from llavakit.config import (
    ConfigError,
    DataConfig,
    DataSource,
    HighresSettings,
    ModelConfig,
    RecipeConfig,
    TrainConfig,
    from_dict,
)
from llavakit.data.collate import collate_samples
from llavakit.image import expand_to_square, to_pixel_values
from llavakit.image_config import ImageProcessorConfig
from llavakit.model.convert import ConversionError
from llavakit.model.convert_hf import check_exportable
from llavakit.model.highres import HighresError, decoder_layers
from llavakit.model.io import build_model, save_checkpoint
from llavakit.processor import highres_crops
from llavakit.train.run import train
from llavakit.train.stages import apply_stage

ARCHS = ["tiny_llama", "tiny_qwen2"]


def config_for(clip, llm, highres: HighresSettings | None, **changes) -> ModelConfig:
    base = ModelConfig(
        vision_tower=str(clip), language_model=str(llm), max_length=512, highres=highres
    )
    return dataclasses.replace(base, **changes)


def build_pair(clip, llm, settings=None, **changes):
    """A plain LLaVA and the same model with an untrained high-res branch (same projector)."""
    torch.manual_seed(0)
    base, _ = build_model(config_for(clip, llm, None, **changes))
    settings = settings or HighresSettings(grid=2)
    model, processor = build_model(config_for(clip, llm, settings, **changes))
    model.projector.load_state_dict(base.projector.state_dict())
    if base.image_newline is not None:
        model.image_newline.data.copy_(base.image_newline.data)
    return base.eval(), model.eval(), processor


def wake(model, seed=1) -> None:
    """Give the blocks (and crop embeddings) random non-zero weights, as training would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.highres.blocks.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
        model.highres.crop_position.copy_(
            torch.randn(model.highres.crop_position.shape, generator=generator)
        )


def image(size_hw, seed) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size_hw, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def conversation(n_images: int, i: int, answer: str | None = "It reads OPEN.") -> list[dict]:
    messages = [{"role": "user", "content": "<image>\n" * n_images + f"What is written? {i}"}]
    return messages + ([{"role": "assistant", "content": answer}] if answer else [])


def training_batch(processor, image_counts=(2, 1, 0)):
    samples = [
        processor.encode(conversation(n, i), [image((30 + 7 * k, 50), i + k) for k in range(n)])
        for i, n in enumerate(image_counts)
    ]
    return samples, collate_samples(samples, processor.pad_token_id)


@pytest.mark.parametrize("arch", ARCHS + ["tiny_gpt2"])
def test_untrained_branch_leaves_logits_exactly_as_plain_llava(request, tiny_clip, arch):
    base, model, processor = build_pair(tiny_clip, request.getfixturevalue(arch))
    _, batch = training_batch(processor)
    assert batch["highres_pixel_values"].shape == (3 * 4, 3, 32, 32)
    plain = {k: v for k, v in batch.items() if k != "highres_pixel_values"}
    with torch.no_grad():
        expected = base(**plain).logits
        assert torch.equal(model(**batch).logits, expected)
        wake(model)  # the blocks really are in the path: trained weights change the logits
        assert not torch.allclose(model(**batch).logits, expected)


@pytest.mark.parametrize("aspect", ["pad", "anyres"])
def test_block_sits_after_self_attention_before_the_mlp(tiny_clip, tiny_llama, aspect):
    """Layer 0's MLP input is x + a + block(x + a): x the layer input, a the self-attention."""
    changes = {"image_aspect_ratio": aspect}
    if aspect == "anyres":
        changes["image_grid_pinpoints"] = [[32, 64], [64, 32], [64, 64]]
    base, model, processor = build_pair(tiny_clip, tiny_llama, **changes)
    wake(model)
    seen = {}

    def keep(name):
        return lambda module, args, output: seen.__setitem__(name, (args, output))

    layer = base.language_model.model.layers[0]
    hooks = [
        layer.register_forward_hook(keep("layer")),
        layer.self_attn.register_forward_hook(keep("attention")),
        layer.post_attention_layernorm.register_forward_hook(keep("plain mlp input")),
        model.language_model.model.layers[0].post_attention_layernorm.register_forward_hook(
            keep("highres mlp input")
        ),
    ]
    sample = processor.encode(conversation(1, 0), [image((40, 70), 0)])
    batch = collate_samples([sample], processor.pad_token_id)
    with torch.no_grad():
        base(**{k: v for k, v in batch.items() if k != "highres_pixel_values"})
        model(**batch)
        context = model._highres_context(
            batch["input_ids"], batch["highres_pixel_values"], batch.get("image_sizes"), None
        )
        residual = seen["layer"][0][0] + seen["attention"][1][0]  # x + a
        update = model.highres.blocks["0"](residual, context, layer=0)
    for hook in hooks:
        hook.remove()
    assert update.abs().max() > 1e-3
    torch.testing.assert_close(seen["highres mlp input"][0][0], residual + update)
    torch.testing.assert_close(seen["plain mlp input"][0][0], residual)


def test_gradients_reach_cross_attention_in_align_not_the_llm(tiny_clip, tiny_llama):
    _, model, processor = build_pair(tiny_clip, tiny_llama)
    apply_stage(model, TrainConfig(stage="align"))
    model.train()
    _, batch = training_batch(processor)
    model(**batch).loss.backward()
    highres = model.highres
    # Zero-initialised output: only it gets a gradient at first (the rest is multiplied by it).
    for block in highres.blocks.values():
        assert block.output.weight.grad.abs().sum() > 0
        assert block.value.weight.grad.abs().sum() == 0
    assert all(p.grad is None for p in model.language_model.parameters())
    assert all(p.grad is None for p in model.vision_tower.parameters())
    assert all(p.grad is None for p in highres.encoder.parameters())
    assert all(p.grad is not None for p in model.projector.parameters())
    # After a step the whole block learns.
    with torch.no_grad():
        for block in highres.blocks.values():
            block.output.weight.normal_(std=0.1)
    model.zero_grad()
    model(**batch).loss.backward()
    trained = {n: p for n, p in highres.named_parameters() if not n.startswith("encoder.")}
    for name, parameter in trained.items():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in model.language_model.parameters())
    # Gradient checkpointing replays each layer with the same keyword arguments: same gradients.
    plain = {name: parameter.grad.clone() for name, parameter in trained.items()}
    model.zero_grad()
    model.gradient_checkpointing_enable()
    model(**batch).loss.backward()
    for name, parameter in trained.items():
        torch.testing.assert_close(parameter.grad, plain[name])


def test_instruct_stage_adds_the_llm(tiny_clip, tiny_qwen2):
    _, model, _ = build_pair(tiny_clip, tiny_qwen2)
    apply_stage(model, TrainConfig(stage="instruct"))
    assert all(p.requires_grad for p in model.language_model.parameters())
    assert all(p.requires_grad for p in model.highres.blocks.parameters())
    assert model.highres.crop_position.requires_grad
    assert not any(p.requires_grad for p in model.highres.encoder.parameters())


@pytest.mark.parametrize("arch", ARCHS)
def test_kv_cache_generation_equals_full_recomputation(request, tiny_clip, arch):
    _, model, processor = build_pair(tiny_clip, request.getfixturevalue(arch))
    wake(model)
    conversations = [conversation(2, 0, None), conversation(1, 1, None), conversation(0, 2, None)]
    images = [[image((30, 60), 0), image((60, 30), 1)], [image((45, 45), 2)], []]
    batch = processor.prompt_batch(conversations, images)
    batch.pop("labels")
    new = model.generate(
        **batch, max_new_tokens=5, do_sample=False, eos_token_id=None, pad_token_id=3
    )
    ids, mask = batch["input_ids"], batch["attention_mask"]
    inputs = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
    with torch.no_grad():
        for step in range(5):
            logits = model(input_ids=ids, attention_mask=mask, **inputs).logits
            chosen = logits[:, -1].argmax(-1)
            assert torch.equal(chosen, new[:, step]), f"step {step}"
            ids = torch.cat([ids, chosen[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], dim=1)


def test_packed_rows_keep_each_sample_to_its_own_crops(tiny_clip, tiny_llama):
    _, model, processor = build_pair(tiny_clip, tiny_llama)
    wake(model)
    samples, _ = training_batch(processor, image_counts=(1, 0, 2))
    ids = torch.tensor([sum((s.input_ids for s in samples), [])])
    positions = torch.cat([torch.arange(len(s.input_ids)) for s in samples])[None]
    highres = torch.from_numpy(
        np.concatenate([s.highres_pixel_values for s in samples if s.image_sizes])
    )
    pixels = torch.from_numpy(np.concatenate([s.pixel_values for s in samples if s.image_sizes]))
    with torch.no_grad():
        packed = model(
            input_ids=ids, position_ids=positions, pixel_values=pixels, highres_pixel_values=highres
        ).logits[0]
        start = 0
        for sample in samples:
            n = len(sample.input_ids)
            alone = collate_samples([sample], processor.pad_token_id)
            alone.pop("labels")
            torch.testing.assert_close(
                packed[start : start + n], model(**alone).logits[0], atol=1e-5, rtol=1e-5
            )
            start += n


def test_checkpoint_round_trip_is_bit_exact(tmp_path, tiny_clip, tiny_qwen2):
    settings = HighresSettings(grid=2, every=2, num_heads=2)
    _, model, processor = build_pair(tiny_clip, tiny_qwen2, settings)
    wake(model)
    _, batch = training_batch(processor)
    with torch.no_grad():
        expected = model(**batch).logits
    copied = save_checkpoint(model, processor, tmp_path / "copied")
    referenced = save_checkpoint(
        model, processor, tmp_path / "referenced", copy_vision=False, copy_language_model=False
    )
    recorded = json.loads((copied / "config.json").read_text())["model"]["highres"]
    assert recorded == {"grid": 2, "encoder": "vision_tower", "select_layer": -2,
                        "layers": [0], "every": 2, "num_heads": 2}  # fmt: skip
    assert not (copied / "highres_encoder").exists()  # the tower's copy serves both
    for folder in (copied, referenced):
        loaded, loaded_processor = llavakit.load(folder)
        assert loaded.config.highres.layers == [0] and loaded.config.highres.grid == 2
        assert list(loaded.highres.blocks) == ["0"]
        _, again = training_batch(loaded_processor)
        assert torch.equal(again["highres_pixel_values"], batch["highres_pixel_values"])
        with torch.no_grad():
            assert torch.equal(loaded(**again).logits, expected)
    assert json.loads((referenced / "config.json").read_text())["model"]["highres"][
        "encoder"
    ] == str(tiny_clip.resolve())
    with pytest.raises(ConversionError, match="high-resolution encoder"):
        check_exportable(copied)


def test_separate_encoder_with_its_own_crop_size(tmp_path, tiny_clip, tiny_llama):
    small = tiny.write_clip(tmp_path / "clip16", image_size=16, patch_size=8, seed=5)
    settings = HighresSettings(grid=3, encoder=str(small), layers=[1], select_layer=-1)
    _, model, processor = build_pair(tiny_clip, tiny_llama, settings)
    assert processor.geometry.highres_crop_size == 16
    wake(model)
    _, batch = training_batch(processor)
    assert batch["highres_pixel_values"].shape == (3 * 9, 3, 16, 16)
    with torch.no_grad():
        expected = model(**batch).logits
    folder = save_checkpoint(model, processor, tmp_path / "ckpt")
    assert (folder / "highres_encoder" / "config.json").is_file()
    loaded, _ = llavakit.load(folder)
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, expected)
    siglip_stats = tiny.write_siglip(tmp_path / "siglip", image_size=16)
    bad = HighresSettings(grid=2, encoder=str(siglip_stats))
    with pytest.raises(ConfigError, match="normalises pixels with mean"):
        build_model(config_for(tiny_clip, tiny_llama, bad))


def test_settings_from_config_and_their_errors(tiny_clip, tiny_llama):
    config = from_dict(
        ModelConfig,
        {"vision_tower": str(tiny_clip), "language_model": str(tiny_llama),
         "highres": {"grid": 2, "layers": [1]}},
    )  # fmt: skip
    model, _ = build_model(config)
    assert model.config.highres.layers == [1] and model.config.highres.num_heads == 4
    _, layers = decoder_layers(model.language_model)
    assert not layers[0]._forward_pre_hooks and len(layers[1]._forward_pre_hooks) == 1
    for settings, message in [
        (HighresSettings(layers=[2]), r"layer indices in 0\.\.1"),
        (HighresSettings(num_heads=5), "must divide the hidden size 32"),
        (HighresSettings(grid=0), "grid must be >= 1"),
    ]:
        with pytest.raises(HighresError, match=message):
            build_model(dataclasses.replace(config, highres=settings))
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(ModelConfig, {"highres": {"grids": 2}})
    _, batch = training_batch(build_model(config)[1])
    batch.pop("highres_pixel_values")
    with pytest.raises(HighresError, match="no highres_pixel_values"):
        model(**batch)


def test_highres_crops_tile_the_padded_image():
    config = ImageProcessorConfig(size=16, crop_size=16)
    picture = image((20, 36), 0)
    crops = highres_crops(picture, config, grid=3, crop_size=16)  # [9, 3, 16, 16]
    assert crops.shape == (9, 3, 16, 16)
    whole = expand_to_square(picture, config.pad_color).resize((48, 48), config.resample)
    expected = to_pixel_values(whole, config)  # [3, 48, 48]
    rebuilt = crops.reshape(3, 3, 3, 16, 16).transpose(2, 0, 3, 1, 4).reshape(3, 48, 48)
    np.testing.assert_array_equal(rebuilt, expected)


def test_align_then_instruct_train_and_chain_the_branch(tmp_path, tiny_clip, tiny_llama, tiny_data):
    def stage(name: str, init_from=None) -> RecipeConfig:
        model = config_for(tiny_clip, tiny_llama, HighresSettings(grid=2, layers=[1]))
        data = DataConfig(
            train=[DataSource(path=str(tiny_data["instruct"]))],
            image_folder=str(tiny_data["images"]),
        )
        schedule = TrainConfig(
            stage=name, output_dir=str(tmp_path / name), init_from=init_from, max_steps=2,
            per_device_batch_size=4, learning_rate=1e-2, warmup_ratio=0.0, save_steps=1000,
        )  # fmt: skip
        return RecipeConfig(model=model, data=data, train=schedule)

    first = train(stage("align"))
    weights = load_file(str(first / "highres.safetensors"))
    assert weights["blocks.1.output.weight"].abs().sum() > 0  # it learned from zero
    assert not (first / "language_model").exists()  # frozen parts referenced, as in stage 1
    second = train(stage("instruct", init_from=str(first)))
    model, _ = llavakit.load(second)
    assert model.config.highres.layers == [1]
    moved = model.highres.blocks["1"].output.weight.detach()
    assert not torch.equal(moved, weights["blocks.1.output.weight"])  # stage 2 kept training it
    assert (second / "language_model").is_dir()
