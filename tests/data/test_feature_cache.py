"""Cached vision features: computed once, identical to the tower's, invalidated by any key part."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import tiny
import torch

from llavakit.config import ConfigError, DataConfig, DataSource, HighresSettings
from llavakit.data.collate import Collator, PackingCollator
from llavakit.data.dataset import LlavaDataset, load_entries
from llavakit.data.feature_cache import (
    FeatureCache,
    FeatureCacheError,
    FeatureSample,
    content_hash,
    fill_feature_cache,
)
from llavakit.image import load_image
from llavakit.model.io import build_model
from llavakit.model.vision import VisionTower
from llavakit.train.run import train


@pytest.fixture(scope="module")
def model_and_processor(tiny_model_config):
    model, processor = build_model(tiny_model_config)
    return model.eval(), processor


def _images(folder, n=6):
    return [folder / f"{i}.png" for i in range(n)]


def test_fill_once_then_load_equals_the_tower(tmp_path, model_and_processor, tiny_data):
    model, processor = model_and_processor
    tower = model.vision_tower
    paths = _images(tiny_data["images"])
    cache = FeatureCache.for_model(tmp_path, tower, processor)
    assert fill_feature_cache(cache, paths + paths[:2], processor, tower, batch_size=4) == 6
    assert fill_feature_cache(cache, paths, processor, tower) == 0
    reopened = FeatureCache.for_model(tmp_path, tower, processor)
    assert len(reopened) == 6 and reopened.folder == cache.folder
    image = load_image(paths[3])
    features, size = reopened.load(content_hash(paths[3].read_bytes()))
    expected = tower(torch.from_numpy(processor.preprocess_images([image])))
    assert size == (image.height, image.width) and features.shape == (1, 16, 24)
    torch.testing.assert_close(features, expected)  # batched vs alone: float rounding only
    assert json.loads((cache.folder / "key.json").read_text())["select_layer"] == -2
    with pytest.raises(FeatureCacheError, match="is not in the feature cache"):
        reopened.load("0" * 64)


def test_any_key_part_changing_misses(tmp_path, model_and_processor, tiny_data):
    model, processor = model_and_processor
    tower = model.vision_tower
    paths = _images(tiny_data["images"], 2)
    cache = FeatureCache.for_model(tmp_path, tower, processor)
    fill_feature_cache(cache, paths, processor, tower)

    other_layer = VisionTower(tower.encoder, select_layer=-1)
    other_feature = VisionTower(tower.encoder, select_feature="cls_patch")
    other_preprocessing = dataclasses.replace(processor.image_config, resample=2)
    resized = type(processor)(
        processor.tokenizer, other_preprocessing, processor.model_config, processor.geometry
    )
    folders = {
        FeatureCache.for_model(tmp_path, other_layer, processor).folder,
        FeatureCache.for_model(tmp_path, other_feature, processor).folder,
        FeatureCache.for_model(tmp_path, tower, resized).folder,
    }
    with torch.no_grad():
        tower.encoder.post_layernorm.bias.add_(1.0)  # a retrained tower
    folders.add(FeatureCache.for_model(tmp_path, tower, processor).folder)
    with torch.no_grad():
        tower.encoder.post_layernorm.bias.sub_(1.0)
    assert len(folders) == 4 and cache.folder not in folders
    assert FeatureCache.for_model(tmp_path, tower, processor).folder == cache.folder

    edited = tmp_path / "edited.png"
    shutil.copy(paths[0], edited)
    assert content_hash(edited.read_bytes()) in cache  # same bytes, same features
    image = load_image(edited)
    image.putpixel((0, 0), (1, 2, 3))
    image.save(edited)
    assert content_hash(edited.read_bytes()) not in cache
    assert fill_feature_cache(cache, [*paths, edited], processor, tower) == 1


def _entries_and_filled_cache(tmp_path, model, processor, tiny_data):
    """The instruct records, and a cache holding the first four images' features."""
    entries, _ = load_entries(
        DataConfig(
            train=[DataSource(path=str(tiny_data["instruct"]))],
            image_folder=str(tiny_data["images"]),
        )
    )
    cache = FeatureCache.for_model(tmp_path, model.vision_tower, processor)
    fill_feature_cache(cache, _images(tiny_data["images"], 4), processor, model.vision_tower)
    return entries, cache


def test_cached_batches_give_the_pixel_loss(tmp_path, model_and_processor, tiny_data):
    model, processor = model_and_processor
    entries, cache = _entries_and_filled_cache(tmp_path, model, processor, tiny_data)
    plain = LlavaDataset(entries, processor, 128)
    cached = LlavaDataset(entries, processor, 128, feature_cache=cache)
    indices = (0, 1, len(entries) - 1, 2, 3)  # a text-only sample among them
    samples = [cached[i] for i in indices]
    assert all(isinstance(s, FeatureSample) and s.pixel_values is None for s in samples)
    pixel_batch = Collator(processor.pad_token_id)([plain[i] for i in indices])
    feature_batch = Collator(processor.pad_token_id)(samples)
    packed_batch = PackingCollator(processor.pad_token_id, 300)(samples)
    assert "pixel_values" not in feature_batch and feature_batch["vision_features"].shape[0] == 4
    with torch.no_grad():
        expected = model(**pixel_batch).loss
        torch.testing.assert_close(model(**feature_batch).loss, expected)
        torch.testing.assert_close(model(**packed_batch, loss_only=True).loss, expected)
    with pytest.raises(Exception, match=r"record #4 .*not in the feature cache"):
        cached[4]


def test_cached_samples_decode_no_image(tmp_path, model_and_processor, tiny_data, monkeypatch):
    """Sizes come from the cache, so building a cached sample never opens an image."""
    model, processor = model_and_processor
    entries, cache = _entries_and_filled_cache(tmp_path, model, processor, tiny_data)
    expected = LlavaDataset(entries, processor, 128)[0]

    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was decoded in cache mode")

    monkeypatch.setattr("llavakit.data.dataset.load_image", no_decoding)
    monkeypatch.setattr("llavakit.processor.LlavaProcessor.preprocess_images", no_decoding)
    sample = LlavaDataset(entries, processor, 128, feature_cache=cache)[0]
    assert sample.input_ids == expected.input_ids and sample.labels == expected.labels
    assert sample.image_sizes == expected.image_sizes
    assert sample.vision_features.shape[0] == expected.pixel_values.shape[0]


def _align_recipe(tiny_model_config, tiny_data, out, **data_fields):
    return tiny.tiny_recipe(
        tiny_model_config, tiny_data, out, "align", data_fields=data_fields, max_steps=3
    )


def test_training_on_cached_features_matches_pixels(tmp_path, tiny_model_config, tiny_data):
    curves = []
    for name, cache in (("pixels", None), ("cached", str(tmp_path / "cache"))):
        folder = train(
            _align_recipe(tiny_model_config, tiny_data, tmp_path / name, feature_cache=cache)
        )
        curves.append([p["loss"] for p in json.loads((folder / "loss_history.json").read_text())])
    assert len(curves[0]) == 3
    for a, b in zip(*curves):
        assert abs(a - b) < 1e-4 * a, curves
    (folder,) = (tmp_path / "cache").iterdir()
    assert len(json.loads((folder / "index.json").read_text())) == 24
    recipe = _align_recipe(tiny_model_config, tiny_data, tmp_path / "x", feature_cache="c")
    recipe.train.tune_vision_tower = True
    with pytest.raises(ConfigError, match="feature_cache needs a frozen vision tower"):
        train(recipe)
    recipe.train.tune_vision_tower = False
    recipe.model.highres = HighresSettings(grid=2)
    with pytest.raises(ConfigError, match="model.highres .* needs every image's pixels"):
        train(recipe)
