import os
import sys
from pathlib import Path

import pytest
import torch

# Tiny models run fastest on one thread, and a busy 2-core machine makes a second thread
# many times slower; subprocesses started by tests inherit the setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

sys.path.insert(0, str(Path(__file__).parent))

import tiny  # noqa: E402


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    return tiny.write_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="session")
def tiny_siglip(tmp_path_factory) -> Path:
    return tiny.write_siglip(tmp_path_factory.mktemp("siglip"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return tiny.write_llm(tmp_path_factory.mktemp("llama"), "llama")


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> Path:
    return tiny.write_llm(tmp_path_factory.mktemp("qwen2"), "qwen2")


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    return tiny.write_llm(tmp_path_factory.mktemp("gpt2"), "gpt2")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict[str, Path]:
    return tiny.write_image_records(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def tiny_model_config(tiny_clip, tiny_llama):
    from llavakit.config import ModelConfig

    return ModelConfig(
        vision_tower=str(tiny_clip),
        language_model=str(tiny_llama),
        template="vicuna_v1",
        max_length=128,
    )


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model_config) -> Path:
    """A saved llavakit checkpoint (tiny CLIP + tiny Llama, random projector)."""
    from llavakit.model.io import build_model, save_checkpoint

    model, processor = build_model(tiny_model_config)
    return save_checkpoint(model, processor, tmp_path_factory.mktemp("ckpt") / "model")
