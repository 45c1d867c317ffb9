"""COCO instances + captions -> per-image contexts and the teacher's textual context."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llavakit.datagen.coco import context_text, load_coco_contexts

IMAGES = [
    {"id": 42, "file_name": "COCO_train2014_000000000042.jpg", "width": 640, "height": 480},
    {"id": 7, "file_name": "COCO_train2014_000000000007.jpg", "width": 500, "height": 500},
]
INSTANCES = {
    "images": IMAGES,
    "annotations": [
        {"id": 1, "image_id": 42, "category_id": 18, "bbox": [64, 48, 320, 240], "iscrowd": 0},
        {"id": 2, "image_id": 42, "category_id": 37, "bbox": [100.5, 20.25, 200.0, 300.0]},
        {"id": 3, "image_id": 42, "category_id": 1, "bbox": [600, 400, 100, 100]},
        {
            "id": 4,
            "image_id": 7,
            "category_id": 1,
            "bbox": [0, 0, 250, 500],
            "attributes": {"pose": "standing"},
        },
    ],
    "categories": [
        {"id": 1, "name": "person"},
        {"id": 18, "name": "dog"},
        {"id": 37, "name": "sports ball"},
    ],
}
CAPTIONS = {
    "images": IMAGES,
    "annotations": [
        {"id": 10, "image_id": 42, "caption": "A dog runs after a ball. "},
        {"id": 11, "image_id": 42, "caption": "\nA brown dog playing fetch in a park."},
        {"id": 12, "image_id": 7, "caption": "   "},
    ],
}


def write(folder: Path, name: str, data) -> Path:
    path = folder / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_contexts_join_captions_and_normalised_boxes(tmp_path):
    loaded = load_coco_contexts(
        write(tmp_path, "instances.json", INSTANCES), write(tmp_path, "captions.json", CAPTIONS)
    )
    assert loaded.without_captions == [7]  # its only caption is blank
    assert loaded.contexts == [
        {
            "image_id": 42,
            "file_name": "COCO_train2014_000000000042.jpg",
            "width": 640,
            "height": 480,
            "captions": ["A dog runs after a ball.", "A brown dog playing fetch in a park."],
            "instances": [
                {"category": "dog", "bbox": [0.1, 0.1, 0.6, 0.6]},
                {"category": "sports ball", "bbox": [0.157, 0.042, 0.47, 0.667]},
                {"category": "person", "bbox": [0.938, 0.833, 1.0, 1.0]},  # clipped to the image
            ],
        }
    ]
    assert context_text(loaded.contexts[0]) == (
        "A dog runs after a ball.\n"
        "A brown dog playing fetch in a park.\n"
        "\n"
        "dog: [0.100, 0.100, 0.600, 0.600]\n"
        "sports ball: [0.157, 0.042, 0.470, 0.667]\n"
        "person: [0.938, 0.833, 1.000, 1.000]"
    )


def test_attributes_are_kept_and_captions_alone_are_enough(tmp_path):
    captions = {**CAPTIONS, "annotations": [{"image_id": 7, "caption": "A man stands."}]}
    loaded = load_coco_contexts(
        write(tmp_path, "instances.json", INSTANCES), write(tmp_path, "captions.json", captions)
    )
    [context] = loaded.contexts
    assert context["instances"] == [
        {"category": "person", "bbox": [0.0, 0.0, 0.5, 1.0], "attributes": {"pose": "standing"}}
    ]
    without_boxes = load_coco_contexts(None, write(tmp_path, "captions.json", captions))
    assert without_boxes.contexts[0]["instances"] == []
    assert context_text(without_boxes.contexts[0]) == "A man stands."


@pytest.mark.parametrize(
    ("kind", "data", "message"),
    [
        ("captions", "{not json", r"captions.json: not valid JSON"),
        ("captions", [{"image": "a.jpg"}], r"captions.json: the top level should be an object"),
        ("captions", {"images": []}, r"captions.json: the top level has no 'annotations'"),
        ("captions", {"images": {}, "annotations": []}, r"'images' should be a list"),
        (
            "captions",
            {
                "images": [{"id": 1, "file_name": "a.jpg", "width": 0, "height": 5}],
                "annotations": [],
            },
            r"images\[0\] has size 0x5",
        ),
        (
            "captions",
            {"images": IMAGES, "annotations": [{"image_id": 42, "text": "hi"}]},
            r"captions.json: annotations\[0\] has no 'caption'; expected a COCO captions file",
        ),
        (
            "instances",
            {"images": IMAGES, "annotations": []},
            r"instances.json: the top level has no 'categories'; expected a COCO instances file",
        ),
        (
            "instances",
            {**INSTANCES, "annotations": [{"image_id": 42, "category_id": 1}]},
            r"instances.json: annotations\[0\] has no 'bbox'",
        ),
        (
            "instances",
            {
                **INSTANCES,
                "annotations": [{"image_id": 42, "category_id": 99, "bbox": [0, 0, 1, 1]}],
            },
            r"annotations\[0\] has category_id 99, which is not in 'categories'",
        ),
        (
            "instances",
            {**INSTANCES, "annotations": [{"image_id": 5, "category_id": 1, "bbox": [0, 0, 1, 1]}]},
            r"annotations\[0\] refers to image 5, which is not in 'images'",
        ),
        (
            "instances",
            {**INSTANCES, "annotations": [{"image_id": 42, "category_id": 1, "bbox": [0, 0, 1]}]},
            r"annotations\[0\] bbox should be \[x, y, w, h\]",
        ),
    ],
)
def test_files_that_are_not_coco_shaped_are_named_with_what_is_missing(
    tmp_path, kind, data, message
):
    captions = write(tmp_path, "captions.json", data if kind == "captions" else CAPTIONS)
    instances = write(tmp_path, "instances.json", data if kind == "instances" else INSTANCES)
    with pytest.raises(ValueError, match=message):
        load_coco_contexts(instances, captions)
