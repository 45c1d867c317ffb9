"""COCO annotations -> what a text-only teacher is told about each image.

Reads the real COCO 2014/2017 layout: an instances file (`images`, `annotations` with `bbox` =
[x, y, width, height] in pixels, `categories`) and a captions file (`images`, `annotations` with
`caption`). Each image becomes a context dict

    {"image_id", "file_name", "width", "height", "captions": [...],
     "instances": [{"category", "bbox": [x1, y1, x2, y2] in [0, 1], "attributes": {...}}]}

(`attributes` only when the annotation has them), and `context_text` renders it the way LLaVA's
teacher saw it: the captions, a blank line, then one `category: [x1, y1, x2, y2]` line per object.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class CocoContexts:
    """Contexts of the images that have captions, and the images left out for having none."""

    contexts: list[dict[str, Any]]
    without_captions: list[Any] = field(default_factory=list)
    """Ids of images listed in the files but with no non-blank caption."""


def _load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error


def _require(path: Path, where: str, item: Any, keys: tuple[str, ...], kind: str) -> None:
    if not isinstance(item, dict):
        raise ValueError(f"{path}: {where} should be an object, got {type(item).__name__}")
    for key in keys:
        if key not in item:
            raise ValueError(f"{path}: {where} has no {key!r}; expected a COCO {kind} file")


def _load_coco_file(path: Path, kind: str, keys: tuple[str, ...]) -> dict[str, Any]:
    data = _load_json(path)
    _require(path, "the top level", data, keys, kind)
    for key in keys:
        if not isinstance(data[key], list):
            raise ValueError(f"{path}: {key!r} should be a list, got {type(data[key]).__name__}")
    return data


def _image_table(path: Path, images: list[Any], kind: str) -> dict[Any, dict[str, Any]]:
    table = {}
    for index, image in enumerate(images):
        _require(path, f"images[{index}]", image, ("id", "file_name", "width", "height"), kind)
        size = (image["width"], image["height"])
        if not all(isinstance(value, (int, float)) and value > 0 for value in size):
            raise ValueError(f"{path}: images[{index}] has size {image['width']}x{image['height']}")
        table[image["id"]] = image
    return table


def normalise_bbox(bbox: list[float], width: float, height: float) -> list[float]:
    """COCO [x, y, w, h] in pixels -> [x1, y1, x2, y2] as fractions of the size, 3 decimals."""
    x, y, w, h = bbox
    corners = (x / width, y / height, (x + w) / width, (y + h) / height)
    return [round(min(max(value, 0.0), 1.0), 3) for value in corners]


def load_coco_contexts(instances_path: Path | None, captions_path: Path) -> CocoContexts:
    """Join a COCO instances file (optional) and a captions file into per-image contexts.

    Images come from both files' `images` lists, in image-id order; those without a caption
    are reported rather than given to a teacher that would have nothing to go on.
    """
    captions_path = Path(captions_path)
    captions_data = _load_coco_file(captions_path, "captions", ("images", "annotations"))
    images = _image_table(captions_path, captions_data["images"], "captions")
    captions: dict[Any, list[str]] = {}
    for index, annotation in enumerate(captions_data["annotations"]):
        _require(
            captions_path, f"annotations[{index}]", annotation, ("image_id", "caption"), "captions"
        )
        text = str(annotation["caption"]).strip()
        if text:
            captions.setdefault(annotation["image_id"], []).append(text)

    instances: dict[Any, list[dict[str, Any]]] = {}
    if instances_path is not None:
        instances_path = Path(instances_path)
        data = _load_coco_file(instances_path, "instances", ("images", "annotations", "categories"))
        instance_images = _image_table(instances_path, data["images"], "instances")
        images = {**instance_images, **images}
        names = {}
        for index, category in enumerate(data["categories"]):
            _require(instances_path, f"categories[{index}]", category, ("id", "name"), "instances")
            names[category["id"]] = category["name"]
        for index, annotation in enumerate(data["annotations"]):
            where = f"annotations[{index}]"
            keys = ("image_id", "category_id", "bbox")
            _require(instances_path, where, annotation, keys, "instances")
            image = instance_images.get(annotation["image_id"])
            if image is None:
                raise ValueError(
                    f"{instances_path}: {where} refers to image {annotation['image_id']!r}, "
                    "which is not in 'images'"
                )
            if annotation["category_id"] not in names:
                raise ValueError(
                    f"{instances_path}: {where} has category_id {annotation['category_id']!r}, "
                    "which is not in 'categories'"
                )
            bbox = annotation["bbox"]
            if not (
                isinstance(bbox, list)
                and len(bbox) == 4
                and all(isinstance(value, (int, float)) for value in bbox)
            ):
                raise ValueError(
                    f"{instances_path}: {where} bbox should be [x, y, w, h], got {bbox}"
                )
            instance = {
                "category": names[annotation["category_id"]],
                "bbox": normalise_bbox(bbox, image["width"], image["height"]),
            }
            if annotation.get("attributes"):
                instance["attributes"] = annotation["attributes"]
            instances.setdefault(annotation["image_id"], []).append(instance)

    result = CocoContexts(contexts=[])
    for image_id in sorted(images, key=lambda value: (str(type(value)), value)):
        if not captions.get(image_id):
            result.without_captions.append(image_id)
            continue
        image = images[image_id]
        result.contexts.append(
            {
                "image_id": image_id,
                "file_name": image["file_name"],
                "width": image["width"],
                "height": image["height"],
                "captions": captions[image_id],
                "instances": instances.get(image_id, []),
            }
        )
    return result


def context_text(context: dict[str, Any]) -> str:
    """The teacher's view of one image: captions, blank line, `category: [x1, y1, x2, y2]` lines."""
    text = "\n".join(context["captions"])
    boxes = [
        f"{instance['category']}: [{', '.join(f'{value:.3f}' for value in instance['bbox'])}]"
        for instance in context["instances"]
    ]
    if boxes:
        text += "\n\n" + "\n".join(boxes)
    return text
