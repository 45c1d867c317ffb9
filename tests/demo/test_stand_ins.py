"""Stage-0 stand-ins: built, checked against the world, installed by the demo, held out."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from llavakit.demo.pipeline import make_world, run_demo
from llavakit.demo.sizes import DEFAULT, SMOKE
from llavakit.demo.stand_ins import (
    SHIPPED,
    StandInsError,
    build_stand_ins,
    install_stand_ins,
    read_manifest,
    world_fingerprint,
)
from llavakit.world import load_split


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stand_ins")
    manifest = build_stand_ins(folder, SMOKE, None)
    return folder, manifest


def test_a_build_writes_loadable_models_and_a_manifest_of_this_world(built):
    from transformers import AutoModelForCausalLM, AutoTokenizer, CLIPModel

    folder, manifest = built
    assert read_manifest(folder) == manifest
    assert manifest["fingerprint"] == world_fingerprint()
    assert manifest["sizes"]["seed"] != SMOKE.seed  # a world of its own
    assert manifest["metrics"]["llm"]["steps"] == SMOKE.lm_steps
    assert manifest["metrics"]["clip"]["steps"] == SMOKE.clip_steps
    assert len(manifest["train_content"]) == len(set(manifest["train_content"])) > 0
    assert AutoModelForCausalLM.from_pretrained(folder / "llm").config.hidden_size == SMOKE.lm_width
    assert CLIPModel.from_pretrained(folder / "clip").config.vision_config.image_size == 32
    assert len(AutoTokenizer.from_pretrained(folder / "tokenizer")) > 100


def test_the_demo_installs_them_and_its_eval_split_avoids_their_training_images(built, tmp_path):
    folder, manifest = built
    sizes = replace(SMOKE, stage0=str(folder))
    make_world(tmp_path, sizes)
    evaluated = {image.content_digest() for image in load_split(tmp_path / "world", "eval").images}
    assert not evaluated & set(manifest["train_content"])

    summary = install_stand_ins(folder, tmp_path, sizes)
    assert summary["source"] == str(folder)
    assert set(summary["llm"]["benchmark_in_words"]) >= {"existence", "colour"}
    shipped = load_file(folder / "llm" / "model.safetensors")
    installed = load_file(tmp_path / "stage0" / "llm" / "model.safetensors")
    assert shipped.keys() == installed.keys()
    assert all(torch.equal(shipped[name], installed[name]) for name in shipped)


def test_stand_ins_for_another_world_or_tower_size_are_refused(built, tmp_path):
    folder, _ = built
    with pytest.raises(StandInsError, match="96 px"):
        install_stand_ins(folder, tmp_path, replace(SMOKE, image_size=96, patch_size=12))
    stale = tmp_path / "stale"
    import shutil

    shutil.copytree(folder, stale)
    manifest = json.loads((stale / "manifest.json").read_text())
    (stale / "manifest.json").write_text(json.dumps(manifest | {"fingerprint": "0" * 16}))
    with pytest.raises(StandInsError, match="make stand-ins"):
        install_stand_ins(stale, tmp_path, SMOKE)
    with pytest.raises(StandInsError, match="make stand-ins"):  # before any step runs
        run_demo(tmp_path / "run", replace(SMOKE, stage0=str(stale)))
    assert not (tmp_path / "run" / "world").exists()
    (stale / "manifest.json").unlink()
    with pytest.raises(StandInsError, match="not a stand-ins folder"):
        install_stand_ins(stale, tmp_path, SMOKE)


def test_the_shipped_stand_ins_fit_this_world_and_the_default_sizes():
    """Fails when the world's generator or language changes without `make stand-ins`."""
    manifest = read_manifest(SHIPPED)
    assert manifest["fingerprint"] == world_fingerprint(), "stale: rebuild with make stand-ins"
    clip = json.loads((SHIPPED / "clip" / "config.json").read_text())["vision_config"]
    assert (clip["image_size"], clip["patch_size"]) == (DEFAULT.image_size, DEFAULT.patch_size)
    llm = json.loads((SHIPPED / "llm" / "config.json").read_text())
    assert llm["hidden_size"] == manifest["sizes"]["lm_width"]
