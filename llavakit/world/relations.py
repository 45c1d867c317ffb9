"""Spatial facts about annotated objects: relations, regions, names that pick one object out.

The captions, the symbolic teacher and the benchmark all decide "left of", "in the top left"
and "the red circle" here, from the same normalised boxes, so the training data and the
questions it is tested on can never disagree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from llavakit.world.annotations import WorldImage, WorldObject

MIN_GAP = 0.04
"""Boxes must be at least this far apart (fraction of the image) for a relation to be asked."""

RELATION_PHRASES = MappingProxyType(
    {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}
)
"""How each relation is said: "the red circle is <phrase> the blue star"."""


@dataclass(frozen=True)
class Thing:
    """An object as the teacher sees it: category, optional attributes, normalised box."""

    category: str
    color: str | None
    size: str | None
    box: tuple[float, float, float, float]
    """(x1, y1, x2, y2), each in [0, 1]."""

    @property
    def name(self) -> str:
        """Colour and category ("red circle"), or the category alone when the colour is unknown."""
        return f"{self.color} {self.category}" if self.color else self.category

    @property
    def full_name(self) -> str:
        """Size, colour, category ("large red circle"): the order every description uses."""
        return f"{self.size} {self.name}" if self.size else self.name

    @property
    def center(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return ((x1 + x2) / 2, (y1 + y2) / 2)


def thing_from_object(obj: WorldObject, width: int, height: int) -> Thing:
    x, y, w, h = obj.bbox
    return Thing(
        category=obj.category,
        color=obj.color or None,
        size=obj.size or None,
        box=(x / width, y / height, (x + w) / width, (y + h) / height),
    )


def things_from_image(image: WorldImage) -> list[Thing]:
    return [thing_from_object(obj, image.width, image.height) for obj in image.objects]


def things_from_instances(instances: Iterable[Any], where: str = "context") -> list[Thing]:
    """Teacher-context instances (`{"category", "bbox": [x1, y1, x2, y2] in [0,1],
    "attributes"}`) as Things; raises ValueError naming the bad entry."""
    things = []
    for index, instance in enumerate(instances):
        place = f"{where} instances[{index}]"
        if not isinstance(instance, dict):
            raise ValueError(f"{place}: expected an object, got {type(instance).__name__}")
        category = instance.get("category")
        if not isinstance(category, str) or not category:
            raise ValueError(f"{place}: 'category' should be a non-empty string")
        bbox = instance.get("bbox")
        if (
            not isinstance(bbox, (list, tuple))
            or len(bbox) != 4
            or not all(isinstance(v, (int, float)) and -0.01 <= v <= 1.01 for v in bbox)
        ):
            raise ValueError(f"{place}: 'bbox' should be [x1, y1, x2, y2] in [0, 1], got {bbox!r}")
        attributes = instance.get("attributes") or {}
        if not isinstance(attributes, dict):
            raise ValueError(f"{place}: 'attributes' should be an object")
        things.append(
            Thing(
                category=category,
                color=attributes.get("color") or None,
                size=attributes.get("size") or None,
                box=tuple(float(v) for v in bbox),
            )
        )
    return things


def horizontal_relation(a: Thing, b: Thing, min_gap: float = MIN_GAP) -> str | None:
    """Where `a` is relative to `b` ("left" or "right") when clearly apart, else None."""
    if a.box[2] + min_gap <= b.box[0]:
        return "left"
    if b.box[2] + min_gap <= a.box[0]:
        return "right"
    return None


def vertical_relation(a: Thing, b: Thing, min_gap: float = MIN_GAP) -> str | None:
    """Where `a` is relative to `b` ("above" or "below") when clearly apart, else None."""
    if a.box[3] + min_gap <= b.box[1]:
        return "above"
    if b.box[3] + min_gap <= a.box[1]:
        return "below"
    return None


def region(thing: Thing) -> str:
    """Where the object's centre lies on a 3x3 grid: "top left", "center", "bottom", ..."""
    x, y = thing.center
    row = "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else ""
    column = "left" if x < 1 / 3 else "right" if x > 2 / 3 else ""
    return f"{row} {column}".strip() or "center"


def region_phrase(place: str) -> str:
    """How a region is said: "in the top left corner", "at the top", "in the center"..."""
    if place == "center":
        return "in the center"
    if " " in place:
        return f"in the {place} corner"
    if place in ("top", "bottom"):
        return f"at the {place}"
    return f"on the {place}"


def unique_name(thing: Thing, things: Sequence[Thing]) -> str | None:
    """The name that picks out exactly this object ("red circle"), or None if it is shared."""
    matches = sum(1 for other in things if other.name == thing.name)
    return thing.name if matches == 1 else None


def category_counts(things: Iterable[Thing]) -> Counter[str]:
    return Counter(thing.category for thing in things)


def clear_pairs(things: Sequence[Thing]) -> list[tuple[Thing, Thing, str, str]]:
    """Every ordered pair of uniquely named objects with a clear relation.

    Yields (a, b, axis, relation) with axis "horizontal" (relation "left"/"right") or
    "vertical" ("above"/"below"); a pair apart on both axes appears twice.
    """
    named = [t for t in things if unique_name(t, things)]
    pairs = []
    for a in named:
        for b in named:
            if a is b:
                continue
            horizontal = horizontal_relation(a, b)
            if horizontal:
                pairs.append((a, b, "horizontal", horizontal))
            vertical = vertical_relation(a, b)
            if vertical:
                pairs.append((a, b, "vertical", vertical))
    return pairs
