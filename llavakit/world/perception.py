"""Perception questions about one scene, each with a full-sentence and a one-word answer.

The symbolic teacher's conversations (LLaVA-Instruct style: "No, there is no orange circle in
the image.") and the world's short-answer VQA data (LLaVA-1.5's VQAv2/GQA style: "no") ask the
same questions about the same annotations; both take them from here, so the two can never
disagree. Every answer is computed from the annotation: existence (half the "no" questions a
near miss: a present colour or a present shape), colour, counting, relative position and size.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from llavakit.world.phrasing import question
from llavakit.world.relations import (
    RELATION_PHRASES,
    Thing,
    category_counts,
    clear_pairs,
    unique_name,
)
from llavakit.world.vocabulary import (
    CATEGORIES,
    OBJECT_COLOURS,
    number_word,
    plural,
    with_article,
)


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    """The answer as a sentence, as the teacher writes it."""
    short: str | None = None
    """The answer as a single word or phrase (VQA style); None for open-ended questions."""
    kind: str = ""
    """existence, colour, counting, position, size (empty for other questions)."""


def perception_pools(things: Sequence[Thing], rng: random.Random) -> dict[str, list[QA]]:
    """Every perception question the scene supports, grouped by kind."""
    return {
        "existence": existence_pairs(things, rng),
        "colour": colour_pairs(things, rng),
        "counting": counting_pairs(things, rng),
        "position": position_pairs(things, rng),
        "size": size_pairs(things, rng),
    }


def existence_pairs(things: Sequence[Thing], rng: random.Random) -> list[QA]:
    """One object that is there and, when one exists, a name that is not."""
    present = rng.choice(things)
    pairs = [
        QA(
            question("existence", rng, thing=with_article(present.name)),
            f"Yes, there is {with_article(present.name)} in the image.",
            "yes",
            "existence",
        )
    ]
    absent = absent_name(things, rng)
    if absent:
        pairs.append(
            QA(
                question("existence", rng, thing=with_article(absent)),
                f"No, there is no {absent} in the image.",
                "no",
                "existence",
            )
        )
    return pairs


def absent_name(things: Sequence[Thing], rng: random.Random) -> str | None:
    """A name not in the scene; half the time a near miss (a present colour or category)."""
    names = {thing.name for thing in things}
    if all(thing.color for thing in things):
        options = [
            f"{c} {k}" for c in OBJECT_COLOURS for k in CATEGORIES if f"{c} {k}" not in names
        ]
        near = [
            name
            for name in options
            if any(name.split()[0] == t.color or name.split()[1] == t.category for t in things)
        ]
    else:
        options = [k for k in CATEGORIES if k not in {t.category for t in things}]
        near = []
    if near and rng.random() < 0.5:
        return rng.choice(near)
    return rng.choice(options) if options else None


def colour_pairs(things: Sequence[Thing], rng: random.Random) -> list[QA]:
    counts = category_counts(things)
    return [
        QA(
            question("colour", rng, category=thing.category),
            f"The {thing.category} is {thing.color}.",
            thing.color,
            "colour",
        )
        for thing in things
        if counts[thing.category] == 1 and thing.color
    ]


def counting_pairs(things: Sequence[Thing], rng: random.Random) -> list[QA]:
    counts = category_counts(things)
    pairs = [
        QA(
            question("count_all", rng),
            there_are(len(things), "object", "objects"),
            str(len(things)),
            "counting",
        )
    ]
    for category, k in counts.items():
        pairs.append(
            QA(
                question("count", rng, plural=plural(category)),
                there_are(k, category, plural(category)),
                str(k),
                "counting",
            )
        )
    missing = [k for k in CATEGORIES if k not in counts]
    if missing and rng.random() < 0.3:
        category = rng.choice(missing)
        pairs.append(
            QA(
                question("count", rng, plural=plural(category)),
                f"There are no {plural(category)} in the image.",
                "0",
                "counting",
            )
        )
    colours = Counter(thing.color for thing in things if thing.color)
    for colour, k in colours.items():
        pairs.append(
            QA(
                question("count_colour", rng, color=colour),
                there_are(k, f"{colour} object", f"{colour} objects"),
                str(k),
                "counting",
            )
        )
    return pairs


def position_pairs(things: Sequence[Thing], rng: random.Random) -> list[QA]:
    """One question per pair of objects and axis, asked about either of the two."""
    by_pair: dict[tuple, list[tuple[Thing, Thing, str, str]]] = {}
    for a, b, axis, relation in clear_pairs(things):
        key = (frozenset((a.name, b.name)), axis)
        by_pair.setdefault(key, []).append((a, b, axis, relation))
    pairs = []
    for options in by_pair.values():
        a, b, axis, relation = rng.choice(options)
        pairs.append(
            QA(
                question(axis, rng, a=a.name, b=b.name),
                f"The {a.name} is {RELATION_PHRASES[relation]} the {b.name}.",
                relation,
                "position",
            )
        )
    return pairs


def size_pairs(things: Sequence[Thing], rng: random.Random) -> list[QA]:
    return [
        QA(
            question("size", rng, a=thing.name),
            f"The {thing.name} is {thing.size}.",
            thing.size,
            "size",
        )
        for thing in things
        if thing.size and unique_name(thing, things)
    ]


def pick_pairs(pools: dict[str, list[QA]], rng: random.Random, wanted: int) -> list[QA]:
    """Up to `wanted` pairs, taking from each question kind in turn, no question twice."""
    for pool in pools.values():
        rng.shuffle(pool)
    kinds = [name for name, pool in pools.items() if pool]
    rng.shuffle(kinds)
    chosen: list[QA] = []
    asked: set[str] = set()
    while len(chosen) < wanted and any(pools[name] for name in kinds):
        for name in kinds:
            while pools[name]:
                pair = pools[name].pop()
                if pair.question not in asked:
                    asked.add(pair.question)
                    chosen.append(pair)
                    break
            if len(chosen) == wanted:
                break
    return chosen


def there_are(k: int, singular: str, plural_form: str) -> str:
    if k == 1:
        return f"There is one {singular} in the image."
    return f"There are {number_word(k)} {plural_form} in the image."
