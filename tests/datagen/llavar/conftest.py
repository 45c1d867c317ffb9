"""Fixtures for the LLaVAR pipeline tests: folders of rendered text images, a tiny full CLIP."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from llavar_images import shapes_image, text_image  # noqa: E402


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """4 text images (text_0..3.png, one in a sub-folder), 2 shape images, 1 corrupt file."""
    folder = tmp_path_factory.mktemp("llavar_images")
    for index in range(4):
        target = folder / ("signs" if index == 3 else ".") / f"text_{index}.png"
        target.parent.mkdir(exist_ok=True)
        text_image(index).image.save(target)
    for seed in range(2):
        shapes_image(seed).save(folder / f"shapes_{seed}.png")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return folder


@pytest.fixture(scope="session")
def filtered(image_folder, tmp_path_factory) -> Path:
    """The filter step's output folder for `image_folder` (kept.jsonl carries the OCR lines)."""
    from llavakit.datagen.llavar.filter import FilterOptions, run_filter

    out = tmp_path_factory.mktemp("filtered")
    run_filter(FilterOptions(out=out, images=image_folder, progress=False))
    return out


@pytest.fixture(scope="session")
def tiny_full_clip(tmp_path_factory) -> Path:
    """A tiny random CLIPModel with both towers, a tokenizer and a preprocessor config."""
    import tiny
    import torch
    from transformers import CLIPConfig, CLIPModel

    folder = tmp_path_factory.mktemp("full_clip")
    tokenizer = tiny.write_tokenizer(folder)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 24,
            "intermediate_size": 48,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 64,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
        },
        vision_config={
            "image_size": 32,
            "patch_size": 8,
            "hidden_size": 24,
            "intermediate_size": 48,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
        },
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder)
    tiny.write_preprocessor(folder, 32, tiny.CLIP_MEAN, tiny.CLIP_STD, crop=True)
    return folder
