"""Several captions per image, in varied phrasing, built from the image's own annotation.

Captions feed stage-1 alignment and the stage-0 CLIP, so they vary in wording and in what they
mention (a list, a count, a relation, a place) while staying strictly true to the annotation.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence

from llavakit.world.relations import (
    RELATION_PHRASES,
    Thing,
    clear_pairs,
    region,
    region_phrase,
)
from llavakit.world.vocabulary import number_word, plural, with_article

CAPTIONS_PER_IMAGE = 5


def scene_captions(
    things: Sequence[Thing], background: str, rng: random.Random, count: int = CAPTIONS_PER_IMAGE
) -> list[str]:
    """`count` distinct captions of a scene (fewer only if the scene allows fewer)."""
    ordered = reading_order(things)
    on_background = f"on {with_article(background + ' background')}"
    writers: list[Callable[[], str]] = [
        lambda: f"{listing(ordered)} {on_background}.",
        lambda: f"{with_article(background + ' background')} with {listing(ordered)}.",
        lambda: f"{_count_phrase(len(ordered))} {on_background}: {listing(ordered)}.",
        lambda: f"A simple picture of {listing(ordered, sizes=True)}.",
        lambda: _places_caption(ordered),
        lambda: _relation_caption(ordered, rng),
        lambda: f"{listing(ordered, sizes=True)}, drawn {on_background}.",
    ]
    rng.shuffle(writers)
    captions: list[str] = []
    for write in writers:
        caption = _capitalise(write())
        if caption not in captions:
            captions.append(caption)
        if len(captions) == count:
            break
    return captions


def text_image_captions(
    kind: str,
    board_color: str,
    text_colors: Sequence[str],
    lines: Sequence[str],
    background: str,
    rng: random.Random,
    count: int = CAPTIONS_PER_IMAGE,
) -> list[str]:
    """`count` distinct captions of a sign, poster, label or book cover."""
    text = " ".join(lines)
    words = "word" if len(text.split()) == 1 else "words"
    ink = " and ".join(dict.fromkeys(text_colors))
    n_lines = f"{number_word(len(lines))} {'line' if len(lines) == 1 else 'lines'}"
    board = with_article(f"{board_color} {kind}")
    writers: list[Callable[[], str]] = [
        lambda: f'{board} that says "{text}".',
        lambda: f'{with_article(kind)} with the {words} "{text}" written in {ink} letters.',
        lambda: f'The {words} "{text}" on {board}.',
        lambda: f"{board} with {n_lines} of {ink} text.",
        lambda: (
            f"{board} on {with_article(background + ' background')}."
            if background
            else f"{board} covered with {ink} writing."
        ),
    ]
    if kind == "book cover":
        writers.append(lambda: f'{board} with the title "{lines[0]}".')
    rng.shuffle(writers)
    captions: list[str] = []
    for write in writers:
        caption = _capitalise(write())
        if caption not in captions:
            captions.append(caption)
        if len(captions) == count:
            break
    return captions


def reading_order(things: Sequence[Thing]) -> list[Thing]:
    """Top to bottom, then left to right, by 3x3 grid cell and then by centre."""
    rows = {"top": 0, "": 1, "bottom": 2}

    def key(thing: Thing) -> tuple:
        place = region(thing)
        row = place.split()[0] if place.split()[0] in ("top", "bottom") else ""
        return (rows[row], thing.center[0], thing.center[1])

    return sorted(things, key=key)


def listing(things: Sequence[Thing], sizes: bool = False) -> str:
    """A list of the objects: "two red circles and a blue star", or one by one with sizes."""
    if sizes:
        items = [with_article(thing.full_name) for thing in things]
    else:
        groups = Counter(thing.name for thing in things)
        categories = {thing.name: thing for thing in things}
        items = []
        for name, n in groups.items():
            if n == 1:
                items.append(with_article(name))
            else:
                thing = categories[name]
                colour = f"{thing.color} " if thing.color else ""
                items.append(f"{number_word(n)} {colour}{plural(thing.category)}")
    return join_items(items)


def join_items(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _count_phrase(n: int) -> str:
    return "a single shape" if n == 1 else f"{number_word(n)} shapes"


def _places_caption(things: Sequence[Thing]) -> str:
    return join_items([f"{with_article(t.name)} {region_phrase(region(t))}" for t in things]) + "."


def _relation_caption(things: Sequence[Thing], rng: random.Random) -> str:
    pairs = clear_pairs(things)
    if not pairs:
        thing = things[0]
        return f"{with_article(thing.full_name)} {region_phrase(region(thing))}."
    a, b, _axis, relation = rng.choice(pairs)
    return f"{with_article(a.name)} {RELATION_PHRASES[relation]} {with_article(b.name)}."


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]
