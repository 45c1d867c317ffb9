"""The world's annotations as dataclasses, and their COCO-layout files.

The files follow the real COCO layout (`instances.json`, `captions.json`) so that the teacher
pipeline written for COCO runs on the world unchanged; `texts.json` adds the rendered text of
text-rich images. Extra keys that COCO does not have (an image's `kind` and `background`, an
instance's `attributes`) ride along where COCO readers ignore them. Boxes are `[x, y, w, h]` in
pixels, as in COCO.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llavakit.files import write_text_atomic
from llavakit.world.vocabulary import CATEGORIES, TEXT_KINDS

Box = tuple[int, int, int, int]
"""`(x, y, w, h)` in pixels, COCO convention."""

SCENE = "scene"
"""The `kind` of a scene image; text-rich images have one of `TEXT_KINDS` as kind."""

SPLITS = ("train", "eval")
ANNOTATION_FILES = ("instances.json", "captions.json", "texts.json")


def category_table() -> list[dict[str, Any]]:
    """COCO `categories`: the same ids in every split and every world."""
    shapes = [{"name": name, "supercategory": "shape"} for name in CATEGORIES]
    boards = [{"name": name, "supercategory": "text"} for name in TEXT_KINDS]
    return [{"id": i, **entry} for i, entry in enumerate(shapes + boards, start=1)]


@dataclass(frozen=True)
class WorldObject:
    """One drawn thing: a shape in a scene, or the board of a text-rich image."""

    category: str
    color: str
    size: str
    """"small" or "large"."""
    bbox: Box
    """Tight box of the drawn pixels."""


@dataclass(frozen=True)
class WorldText:
    """One rendered line, or one word of it, on a text-rich image."""

    text: str
    bbox: Box
    """Tight box of the inked pixels."""
    level: str
    """"line" or "word"."""
    line: int
    """Index of the line in reading order (top to bottom)."""
    color: str
    font_px: int
    """Font size the text was rendered with."""


@dataclass
class WorldImage:
    """Everything known about one generated image."""

    image_id: int
    file_name: str
    """Path relative to the world's `images/` folder."""
    width: int
    height: int
    kind: str
    """"scene", or the kind of text-rich image ("sign", "poster", "label", "book cover")."""
    background: str
    """Words for the background, e.g. "beige" or "speckled mint"."""
    objects: list[WorldObject] = field(default_factory=list)
    texts: list[WorldText] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    small_text: bool = False
    """True when the text was rendered deliberately small (hard to read at low resolution)."""

    @property
    def is_scene(self) -> bool:
        return self.kind == SCENE

    def lines(self) -> list[str]:
        """The text lines in reading order."""
        lines = sorted((t for t in self.texts if t.level == "line"), key=lambda t: t.line)
        return [t.text for t in lines]

    def content_key(self) -> tuple:
        """What makes two images the same content (used to keep eval out of train)."""
        if self.is_scene:
            objects = sorted((o.category, o.color, o.size, o.bbox) for o in self.objects)
            return (self.kind, self.background, tuple(objects))
        colours = tuple(sorted({o.color for o in self.objects} | {t.color for t in self.texts}))
        return (self.kind, tuple(self.lines()), colours)

    def content_digest(self) -> str:
        """`content_key` as a short stable string, for keeping another world's images (the
        stage-0 stand-ins' pretraining world) out of an eval split."""
        return hashlib.sha1(repr(self.content_key()).encode()).hexdigest()[:16]


@dataclass
class WorldSplit:
    """The images of one split with their annotations."""

    name: str
    images: list[WorldImage]

    def scenes(self) -> list[WorldImage]:
        return [image for image in self.images if image.is_scene]

    def text_images(self) -> list[WorldImage]:
        return [image for image in self.images if not image.is_scene]

    def to_coco(self) -> dict[str, dict[str, Any]]:
        """The three annotation files' contents, keyed by file name."""
        category_ids = {entry["name"]: entry["id"] for entry in category_table()}
        images, instances, captions, texts = [], [], [], []
        for image in self.images:
            images.append(
                {
                    "id": image.image_id,
                    "file_name": image.file_name,
                    "width": image.width,
                    "height": image.height,
                    "kind": image.kind,
                    "background": image.background,
                    "small_text": image.small_text,
                }
            )
            for obj in image.objects:
                x, y, w, h = obj.bbox
                instances.append(
                    {
                        "id": len(instances) + 1,
                        "image_id": image.image_id,
                        "category_id": category_ids[obj.category],
                        "bbox": [x, y, w, h],
                        "area": w * h,
                        "iscrowd": 0,
                        "attributes": {"color": obj.color, "size": obj.size},
                    }
                )
            for caption in image.captions:
                captions.append(
                    {"id": len(captions) + 1, "image_id": image.image_id, "caption": caption}
                )
            for text in image.texts:
                texts.append(
                    {
                        "id": len(texts) + 1,
                        "image_id": image.image_id,
                        "text": text.text,
                        "bbox": list(text.bbox),
                        "level": text.level,
                        "line": text.line,
                        "attributes": {"color": text.color, "font_px": text.font_px},
                    }
                )
        return {
            "instances.json": {
                "images": images,
                "annotations": instances,
                "categories": category_table(),
            },
            "captions.json": {"images": images, "annotations": captions},
            "texts.json": {"images": images, "annotations": texts},
        }

    @classmethod
    def from_coco(
        cls,
        name: str,
        instances: dict[str, Any],
        captions: dict[str, Any],
        texts: dict[str, Any],
        where: str = "",
    ) -> WorldSplit:
        """Rebuild a split from the three files' contents; `where` names them in errors."""
        prefix = f"{where}: " if where else ""
        categories = {
            _field(c, "id", int, f"{prefix}categories"): _field(
                c, "name", str, f"{prefix}categories"
            )
            for c in _field(instances, "categories", list, f"{prefix}instances.json")
        }
        images: dict[int, WorldImage] = {}
        for record in _field(instances, "images", list, f"{prefix}instances.json"):
            place = f"{prefix}instances.json images[id={record.get('id')}]"
            image = WorldImage(
                image_id=_field(record, "id", int, place),
                file_name=_field(record, "file_name", str, place),
                width=_field(record, "width", int, place),
                height=_field(record, "height", int, place),
                kind=record.get("kind", SCENE),
                background=record.get("background", ""),
                small_text=bool(record.get("small_text", False)),
            )
            images[image.image_id] = image
        for record in _field(instances, "annotations", list, f"{prefix}instances.json"):
            place = f"{prefix}instances.json annotations[id={record.get('id')}]"
            image = _owner(images, record, place)
            category_id = _field(record, "category_id", int, place)
            if category_id not in categories:
                raise ValueError(f"{place}: category_id {category_id} is not in categories")
            attributes = record.get("attributes") or {}
            image.objects.append(
                WorldObject(
                    category=categories[category_id],
                    color=str(attributes.get("color", "")),
                    size=str(attributes.get("size", "")),
                    bbox=_box(record, place),
                )
            )
        for record in _field(captions, "annotations", list, f"{prefix}captions.json"):
            place = f"{prefix}captions.json annotations[id={record.get('id')}]"
            _owner(images, record, place).captions.append(_field(record, "caption", str, place))
        for record in _field(texts, "annotations", list, f"{prefix}texts.json"):
            place = f"{prefix}texts.json annotations[id={record.get('id')}]"
            attributes = record.get("attributes") or {}
            _owner(images, record, place).texts.append(
                WorldText(
                    text=_field(record, "text", str, place),
                    bbox=_box(record, place),
                    level=record.get("level", "line"),
                    line=int(record.get("line", 0)),
                    color=str(attributes.get("color", "")),
                    font_px=int(attributes.get("font_px", 0)),
                )
            )
        return cls(name=name, images=list(images.values()))


def write_split(split: WorldSplit, folder: str | Path) -> None:
    """Write `instances.json`, `captions.json` and `texts.json` into `folder` atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for file_name, content in split.to_coco().items():
        write_text_atomic(folder / file_name, json.dumps(content, indent=1) + "\n")


def load_split(world_dir: str | Path, split: str) -> WorldSplit:
    """Read one split ("train" or "eval") of a generated world back into dataclasses."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    folder = Path(world_dir) / split
    contents = []
    for file_name in ANNOTATION_FILES:
        path = folder / file_name
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: is {world_dir} a world made by `llavakit world generate`?"
            )
        try:
            contents.append(json.loads(path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
    return WorldSplit.from_coco(split, *contents, where=str(folder))


def _field(record: Any, key: str, kind: type, place: str) -> Any:
    if not isinstance(record, dict):
        raise ValueError(f"{place}: expected an object, got {type(record).__name__}")
    if key not in record:
        raise ValueError(f"{place}: missing field {key!r}")
    value = record[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{place}: field {key!r} should be {kind.__name__}, got {value!r}")
    return value


def _owner(images: dict[int, WorldImage], record: Any, place: str) -> WorldImage:
    image_id = _field(record, "image_id", int, place)
    if image_id not in images:
        raise ValueError(f"{place}: image_id {image_id} is not in images")
    return images[image_id]


def _box(record: Any, place: str) -> Box:
    bbox = _field(record, "bbox", list, place)
    if len(bbox) != 4 or not all(isinstance(v, (int, float)) for v in bbox):
        raise ValueError(f"{place}: bbox should be [x, y, w, h] numbers, got {bbox!r}")
    x, y, w, h = (int(round(v)) for v in bbox)
    return (x, y, w, h)
