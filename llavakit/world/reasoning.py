"""Complex-reasoning questions the symbolic teacher asks about a scene, each with its steps.

Every maker takes the scene's things and a random stream and returns a question whose answer is
worked out from the annotation (compare counts, remove one, repaint, extremes, add one, compare
sizes, move across), or None when the scene does not fit it.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence

from llavakit.world.perception import QA, there_are
from llavakit.world.phrasing import capital
from llavakit.world.relations import (
    MIN_GAP,
    RELATION_PHRASES,
    Thing,
    category_counts,
    clear_pairs,
    unique_name,
)
from llavakit.world.vocabulary import OBJECT_COLOURS, number_word, plural


def _compare_counts(things: Sequence[Thing], rng: random.Random) -> QA | None:
    counts = category_counts(things)
    if len(counts) < 2:
        return None
    first, second = rng.sample(sorted(counts), 2)
    a, b = counts[first], counts[second]
    q = f"Are there more {plural(first)} or more {plural(second)} in the image?"
    steps = (
        f"Let me count them. {there_are(a, first, plural(first))[:-1]}, and "
        f"{_count_phrase(b, second)}."
    )
    if a == b:
        verdict = (
            f"The numbers are equal, so there are as many {plural(first)} as {plural(second)}."
        )
    else:
        more = first if a > b else second
        verdict = f"{capital(number_word(max(a, b)))} is more than {number_word(min(a, b))}, so there are more {plural(more)}."
    return QA(q, f"{steps} {verdict}")


def _remove_one(things: Sequence[Thing], rng: random.Random) -> QA | None:
    named = [t for t in things if unique_name(t, things)]
    if len(things) < 2 or not named:
        return None
    thing = rng.choice(named)
    n = len(things)
    q = f"If the {thing.name} were taken away, how many objects would be left in the image?"
    a = (
        f"The image has {number_word(n)} objects. Taking away the {thing.name} removes one of "
        f"them, and {n} - 1 = {n - 1}, so {_count_phrase(n - 1, 'object')} would be left."
    )
    return QA(q, a)


def _repaint(things: Sequence[Thing], rng: random.Random) -> QA | None:
    colours = Counter(t.color for t in things if t.color)
    if not colours:
        return None
    source = rng.choice(sorted(colours))
    target = rng.choice([c for c in OBJECT_COLOURS if c != source])
    x, y = colours[source], colours.get(target, 0)
    q = f"If every {source} object were painted {target}, how many {target} objects would there be?"
    a = (
        f"Right now there {'is' if x == 1 else 'are'} {_count_phrase(x, f'{source} object')} and "
        f"{_count_phrase(y, f'{target} object')}. After painting, the {source} "
        f"{'one becomes' if x == 1 else 'ones become'} {target} too, so there would be "
        f"{x} + {y} = {x + y} {target} {'object' if x + y == 1 else 'objects'}."
    )
    return QA(q, a)


def _extreme(things: Sequence[Thing], rng: random.Random) -> QA | None:
    if len(things) < 2:
        return None
    direction = rng.choice(("left", "right", "top", "bottom"))
    measures = {
        "left": lambda t: t.box[0],
        "right": lambda t: -t.box[2],
        "top": lambda t: t.box[1],
        "bottom": lambda t: -t.box[3],
    }
    ranked = sorted(things, key=measures[direction])
    first, second = ranked[0], ranked[1]
    if measures[direction](second) - measures[direction](first) < MIN_GAP:
        return None
    name = unique_name(first, things)
    if not name:
        return None
    if direction in ("left", "right"):
        q = f"Which object is furthest to the {direction}?"
        order = "from left to right" if direction == "left" else "from right to left"
        place = f"furthest to the {direction}"
    else:
        q = f"Which object is closest to the {direction} of the image?"
        order = "from top to bottom" if direction == "top" else "from bottom to top"
        place = f"closest to the {direction}"
    a = (
        f"Going through the objects {order}, the {name} comes first, ahead of the "
        f"{second.name}. So the {name} is {place}."
    )
    return QA(q, a)


def _add_one(things: Sequence[Thing], rng: random.Random) -> QA | None:
    category = rng.choice(sorted(category_counts(things)))
    k = category_counts(things)[category]
    q = f"What would happen to the number of {plural(category)} if one more {category} were added?"
    a = (
        f"There {'is' if k == 1 else 'are'} {_count_phrase(k, category)} now. Adding one more "
        f"would make {k} + 1 = {k + 1}, so there would be {number_word(k + 1)} {plural(category)}."
    )
    return QA(q, a)


def _compare_sizes(things: Sequence[Thing], rng: random.Random) -> QA | None:
    sizes = Counter(t.size for t in things if t.size)
    if sum(sizes.values()) != len(things) or len(things) < 2:
        return None
    large, small = sizes.get("large", 0), sizes.get("small", 0)
    q = "Are there more large objects or more small objects in the image?"
    steps = f"I count {_count_phrase(large, 'large object')} and {_count_phrase(small, 'small object')}."
    if large == small:
        verdict = "The numbers are the same, so neither size is more common."
    else:
        verdict = f"So there are more {'large' if large > small else 'small'} objects."
    return QA(q, f"{steps} {verdict}")


def _move_across(things: Sequence[Thing], rng: random.Random) -> QA | None:
    pairs = [p for p in clear_pairs(things) if p[2] == "horizontal"]
    if not pairs:
        return None
    a, b, _axis, relation = rng.choice(pairs)
    other = "right" if relation == "left" else "left"
    q = (
        f"If the {a.name} moved to the other side of the {b.name}, would it be on the left "
        f"or on the right of the {b.name}?"
    )
    ans = (
        f"The {a.name} is now {RELATION_PHRASES[relation]} the {b.name}. Moving it to the other "
        f"side would put it {RELATION_PHRASES[other]} the {b.name}."
    )
    return QA(q, ans)


REASONING_QUESTIONS: tuple[Callable[[Sequence[Thing], random.Random], QA | None], ...] = (
    _compare_counts,
    _remove_one,
    _repaint,
    _extreme,
    _add_one,
    _compare_sizes,
    _move_across,
)
"""The makers, in the order the teacher lists them before shuffling."""


def _count_phrase(k: int, singular: str) -> str:
    """A counted noun: "no stars", "one star", "three stars"."""
    noun = singular if k == 1 else plural(singular)
    return f"no {noun}" if k == 0 else f"{number_word(k)} {noun}"
