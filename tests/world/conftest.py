"""Fixtures for the synthetic world's tests: one small generated world shared by the session."""

from __future__ import annotations

from pathlib import Path

import pytest

from llavakit.world.annotations import WorldImage
from llavakit.world.generate import generate_world


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory) -> Path:
    """60 scenes and 24 text-rich images (a quarter held out, some with small text)."""
    out = tmp_path_factory.mktemp("world")
    generate_world(
        out,
        n_scenes=60,
        n_text_images=24,
        seed=7,
        eval_fraction=0.25,
        small_text_fraction=0.25,
        progress=False,
    )
    return out


def teacher_context(image: WorldImage) -> dict:
    """A teacher context built directly from an annotation (boxes normalised x1, y1, x2, y2)."""
    instances = []
    for obj in image.objects:
        x, y, w, h = obj.bbox
        instances.append(
            {
                "category": obj.category,
                "bbox": [
                    x / image.width,
                    y / image.height,
                    (x + w) / image.width,
                    (y + h) / image.height,
                ],
                "attributes": {"color": obj.color, "size": obj.size},
            }
        )
    return {"captions": list(image.captions), "instances": instances}


@pytest.fixture(scope="session")
def make_context():
    """The function that turns a `WorldImage` into a teacher context."""
    return teacher_context
