"""The world's closed vocabulary: object categories, colours, sizes, backgrounds and words.

The world is meant to be learned by tiny models within minutes, so every name here is short,
common and unambiguous: no colour name is also a category, no word on a sign is a colour, a
shape, a number or a relation word, and background names never collide with object colours
(so "the first colour word in an answer" is a sound way to score colour questions).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

CATEGORIES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "heart",
    "cross",
    "diamond",
    "arrow",
)
"""Shapes drawn in scenes; every one covers the centre of its box."""

TEXT_KINDS: tuple[str, ...] = ("sign", "poster", "label", "book cover")
"""Kinds of text-rich images; each image holds one board of its kind, annotated as an object."""

OBJECT_COLOURS: Mapping[str, tuple[int, int, int]] = MappingProxyType(
    {
        "red": (215, 40, 40),
        "orange": (245, 140, 20),
        "yellow": (240, 210, 30),
        "green": (40, 160, 60),
        "blue": (40, 90, 220),
        "purple": (130, 60, 190),
        "pink": (240, 110, 180),
        "black": (30, 30, 30),
    }
)
"""Saturated, well separated colours for scene objects (all contrast with the light backgrounds)."""

TEXT_COLOURS: Mapping[str, tuple[int, int, int]] = MappingProxyType(
    {**OBJECT_COLOURS, "white": (250, 250, 250)}
)
"""Colours for boards and lettering on text-rich images."""

COLOUR_NAMES: tuple[str, ...] = tuple(TEXT_COLOURS)
"""Every colour name an answer may contain (used when scoring colour answers)."""

BACKGROUND_COLOURS: Mapping[str, tuple[int, int, int]] = MappingProxyType(
    {
        "gray": (200, 200, 200),
        "beige": (228, 214, 186),
        "mint": (200, 234, 212),
        "lavender": (222, 212, 240),
        "ivory": (244, 242, 228),
        "peach": (246, 222, 204),
    }
)
"""Light, muted background tints whose names are not object colours."""

SIZES: tuple[str, ...] = ("small", "large")

NUMBER_WORDS: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
)

WORDS: tuple[str, ...] = (
    "apple", "bread", "water", "house", "river", "garden", "market", "coffee", "music",
    "school", "train", "cloud", "stone", "table", "chair", "paper", "night", "happy", "dream",
    "ocean", "tiger", "horse", "lemon", "honey", "sugar", "salt", "fish", "bird", "tree",
    "rain", "snow", "wind", "fire", "sun", "park", "road", "city", "shop", "cafe", "open",
    "closed", "sale", "fresh", "hotel", "bank", "farm", "food", "milk", "tea", "cake", "pizza",
    "soup", "rice", "corn", "story", "poem", "game", "play", "dance", "sing", "smile", "love",
    "hope", "home", "door", "room", "bed", "lamp", "clock", "phone", "radio", "movie", "photo",
    "art", "paint", "kite", "boat", "ship", "plane", "car", "bus", "bike", "lake", "hill",
    "sand", "beach", "forest", "island", "winter", "summer", "spring", "autumn", "morning",
    "evening", "friend", "family", "baby", "king", "queen", "castle", "bridge", "tower",
    "station", "street", "north", "south", "east", "west", "magic", "party", "sport", "team",
    "zoo", "panda", "lion", "zebra", "eagle", "mango", "grape", "cookie", "candy", "juice",
    "pasta", "salad", "bakery", "library", "museum", "doctor", "office", "welcome", "hello",
    "quiet", "slow", "stop", "exit", "push", "pull", "free", "new", "hot", "cold", "fast",
    "best", "good", "sweet", "wild", "calm", "brave", "clean",
)  # fmt: skip
"""Words rendered on text-rich images: common English, at least three letters."""

_IRREGULAR_PLURALS = MappingProxyType({"cross": "crosses", "book cover": "book covers"})


def plural(noun: str) -> str:
    """English plural of a category name ("cross" -> "crosses")."""
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    return noun + "s"


def number_word(count: int) -> str:
    """The word for a count ("three" for 3); digits beyond ten."""
    return NUMBER_WORDS[count] if 0 <= count < len(NUMBER_WORDS) else str(count)


def with_article(phrase: str) -> str:
    """The phrase with its indefinite article: "an orange circle", "a red star"."""
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase
