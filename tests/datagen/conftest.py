"""Fixtures for the data-generation tests: a local OpenAI-protocol server and COCO-style files."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_openai import FakeOpenAIServer
from PIL import Image

CAPTIONS = (
    "A brown dog runs across a grassy park.",
    "A dog chasing a ball on the grass.",
)


def task_of(body: dict[str, Any]) -> str:
    """Which of our prompts a request was built from, read off its system message."""
    system = body["messages"][0]["content"]
    if "Write a conversation" in system:
        return "conversation"
    if "Write a detailed description" in system:
        return "detail"
    if "takes reasoning" in system:
        return "complex"
    return "other"


def good_answer(body: dict[str, Any]) -> str:
    """A well-formed answer for the request's task that names the image's first caption."""
    first_caption = body["messages"][-1]["content"].splitlines()[0]
    task = task_of(body)
    if task == "conversation":
        return (
            f"Question:\nWhat is happening?\n===\nAnswer:\n{first_caption}\n===\n"
            "Question:\nIs it daytime?\n===\nAnswer:\nYes, it looks like daytime."
        )
    if task == "complex":
        return f"Question:\nWhy might this be?\n===\nAnswer:\nBecause: {first_caption}"
    return f"The picture shows this scene. {first_caption}"


@pytest.fixture
def llava_answer() -> Callable[[dict[str, Any]], str]:
    """`good_answer`, for tests that script their own server replies around it."""
    return good_answer


@pytest.fixture
def fake_server() -> Iterator[FakeOpenAIServer]:
    """A started server answering every task of our prompts with a well-formed answer."""
    with FakeOpenAIServer(respond=good_answer) as server:
        yield server


@pytest.fixture
def make_coco(tmp_path: Path) -> Callable[..., dict[str, Path]]:
    """Write COCO instances + captions files and an image folder; returns their paths.

    Image i is 640x480 (`{i:012d}.jpg`, id i+1) with two captions and a dog box; images listed
    in `no_captions` get none, those in `missing` have no file on disk.
    """

    def make(n: int = 3, missing: tuple[int, ...] = (), no_captions: tuple[int, ...] = ()):
        folder = tmp_path / "coco"
        images_dir = folder / "images"
        images_dir.mkdir(parents=True, exist_ok=True)
        images, captions, instances = [], [], []
        for index in range(n):
            image_id = index + 1
            file_name = f"{image_id:012d}.jpg"
            images.append({"id": image_id, "file_name": file_name, "width": 640, "height": 480})
            if index not in missing:
                Image.new("RGB", (8, 6), (index * 40 % 255, 90, 30)).save(images_dir / file_name)
            if index not in no_captions:
                for number, caption in enumerate(CAPTIONS):
                    captions.append(
                        {
                            "id": image_id * 10 + number,
                            "image_id": image_id,
                            "caption": f"{caption} (image {image_id})",
                        }
                    )
            instances.append(
                {
                    "id": image_id,
                    "image_id": image_id,
                    "category_id": 18,
                    "bbox": [64, 48, 320, 240],
                }
            )
        categories = [{"id": 18, "name": "dog", "supercategory": "animal"}]
        paths = {
            "annotations": folder / "instances.json",
            "captions": folder / "captions.json",
            "images": images_dir,
            "out": tmp_path / "out" / "data.json",
        }
        paths["annotations"].write_text(
            json.dumps({"images": images, "annotations": instances, "categories": categories})
        )
        paths["captions"].write_text(json.dumps({"images": images, "annotations": captions}))
        return paths

    return make
