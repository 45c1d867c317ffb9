"""The symbolic world teacher: template-based instruction data written from annotations alone.

This is not a language model. It fills hand-written question and answer templates from the
structured context of a request (the world's captions, object boxes with colour and size, and
for LLaVAR tasks the OCR lines and caption), choosing among wordings with a random stream
seeded by the request key. Every answer is computed from the annotation, so it is true by
construction; its language is as varied as its templates and no more. It plugs into the data
generation pipeline through the same `Teacher` interface as an LLM, so the pipeline code that
runs on GPT-4 answers runs unchanged on the synthetic world.

Output formats (the shared parser expects exactly these):
- "conversation", "complex", "llavar_conversation": `Question:\\n<q>\\n===\\nAnswer:\\n<a>`
  pairs joined by `\\n===\\n`;
- "detail": one paragraph.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from llavakit.datagen.protocol import TeacherRequest, TeacherResult
from llavakit.world.captions import join_items, reading_order
from llavakit.world.perception import QA, perception_pools, pick_pairs, there_are
from llavakit.world.phrasing import question
from llavakit.world.relations import (
    MIN_GAP,
    RELATION_PHRASES,
    Thing,
    category_counts,
    clear_pairs,
    region,
    region_phrase,
    things_from_instances,
    unique_name,
)
from llavakit.world.vocabulary import (
    BACKGROUND_COLOURS,
    CATEGORIES,
    OBJECT_COLOURS,
    TEXT_KINDS,
    WORDS,
    number_word,
    plural,
    with_article,
)

SEPARATOR = "\n===\n"
TASKS = ("conversation", "detail", "complex", "llavar_conversation")


def format_pairs(pairs: Sequence[QA]) -> str:
    """The conversation format: `Question:\\n<q>\\n===\\nAnswer:\\n<a>`, pairs joined by ===."""
    return SEPARATOR.join(f"Question:\n{p.question}{SEPARATOR}Answer:\n{p.answer}" for p in pairs)


class SymbolicTeacher:
    """A `Teacher` that writes world data from `request.context`, ignoring `messages`."""

    name = "symbolic-world-teacher"

    def __init__(self, words: Sequence[str] = WORDS):
        self.words = tuple(words)
        """Words the LLaVAR questions may ask about when they are absent from the text."""
        self._writers: dict[str, Callable[[dict[str, Any], random.Random], str]] = {
            "conversation": self.conversation,
            "detail": self.detail,
            "complex": self.complex,
            "llavar_conversation": self.llavar_conversation,
        }

    def complete(self, requests: Iterable[TeacherRequest]) -> Iterator[TeacherResult]:
        for request in requests:
            yield self.answer(request)

    def answer(self, request: TeacherRequest) -> TeacherResult:
        writer = self._writers.get(request.task)
        if writer is None:
            return TeacherResult(
                request.key,
                None,
                error=f"task {request.task!r} is not supported by the {self.name} "
                f"(it writes {', '.join(TASKS)})",
            )
        rng = random.Random(f"{request.task}:{request.key}")
        try:
            text = writer(request.context or {}, rng)
        except ValueError as error:
            return TeacherResult(request.key, None, error=f"{request.key}: {error}")
        return TeacherResult(request.key, text)

    # ---- LLaVA tasks -------------------------------------------------------------------

    def conversation(self, context: dict[str, Any], rng: random.Random) -> str:
        """3-6 questions with definite answers: existence, colour, counting, position, size."""
        things = _things(context)
        pools = perception_pools(things, rng)
        return format_pairs(pick_pairs(pools, rng, rng.randint(3, 6)))

    def detail(self, context: dict[str, Any], rng: random.Random) -> str:
        """One paragraph naming every object (size, colour, category, place) and the background."""
        things = reading_order(_things(context))
        background = _background(context)
        n = len(things)
        shapes = all(thing.category in CATEGORIES for thing in things)
        noun = ("shape" if shapes else "object") + ("" if n == 1 else "s")
        verb = "is" if n == 1 else "are"
        setting = f" on {with_article(background + ' background')}" if background else ""
        openings = [
            f"The image shows {number_word(n)} {noun}{setting}.",
            f"This picture contains {number_word(n)} {noun}{setting}.",
            f"There {verb} {number_word(n)} {noun} in this image{setting}.",
        ]
        sentences = [rng.choice(openings)]
        for index, thing in enumerate(things):
            place = region_phrase(region(thing))
            if _seen_before(thing, things[:index]):
                named = f"another {thing.full_name}"
            else:
                named = with_article(thing.full_name)
            forms = [
                f"{_capital(named)} sits {place}.",
                f"{_capital(place)} there is {named}.",
                f"There is {named} {place}.",
                f"{_capital(named)} can be seen {place}.",
            ]
            sentences.append(rng.choice(forms))
        pairs = clear_pairs(things)
        if pairs:
            a, b, _axis, relation = rng.choice(pairs)
            sentences.append(f"The {a.name} is {RELATION_PHRASES[relation]} the {b.name}.")
        repeated = [(c, k) for c, k in category_counts(things).items() if k > 1]
        if repeated:
            category, k = rng.choice(repeated)
            sentences.append(f"Altogether there are {number_word(k)} {plural(category)}.")
        return " ".join(sentences)

    def complex(self, context: dict[str, Any], rng: random.Random) -> str:
        """One reasoning question (compare, remove, repaint, extremes, move) with its steps."""
        things = _things(context)
        makers = [
            _compare_counts,
            _remove_one,
            _repaint,
            _extreme,
            _add_one,
            _compare_sizes,
            _move_across,
        ]
        rng.shuffle(makers)
        for make in makers:
            pair = make(things, rng)
            if pair is not None:
                return format_pairs([pair])
        raise ValueError("no reasoning question fits these instances")

    # ---- LLaVAR task -------------------------------------------------------------------

    def llavar_conversation(self, context: dict[str, Any], rng: random.Random) -> str:
        """Questions about the text on a text-rich image, answered from context["ocr"]."""
        lines = _ocr_lines(context)
        kind = _text_kind(context)
        where = f"on the {kind}" if kind else "in the image"
        subject = f"the {kind}" if kind else "the image"
        slots = {"kind": kind or "image"}
        words = [word for line in lines for word in line.split()]
        text = " ".join(lines)

        pairs: list[QA] = []
        if len(words) == 1:
            pairs.append(
                QA(
                    question("read_word", rng, **slots),
                    f'The word written {where} is "{words[0]}".',
                )
            )
        else:
            pairs.append(
                QA(question("read_all", rng, **slots), f'{_capital(subject)} says "{text}".')
            )
        extra: list[QA] = []
        if len(lines) > 1:
            extra.append(
                QA(question("read_first_line", rng, **slots), f'The first line says "{lines[0]}".')
            )
            extra.append(
                QA(question("read_last_line", rng, **slots), f'The last line says "{lines[-1]}".')
            )
            extra.append(
                QA(
                    question("line_count", rng, **slots),
                    f"There are {number_word(len(lines))} lines of text {where}.",
                )
            )
        else:
            extra.append(
                QA(question("line_count", rng, **slots), f"There is one line of text {where}.")
            )
        if len(words) > 1:
            quoted = join_items([f'"{w}"' for w in words])
            extra.append(
                QA(
                    question("word_count", rng, **slots),
                    f"There are {number_word(len(words))} words: {quoted}.",
                )
            )
        shown = rng.choice(words)
        extra.append(
            QA(
                question("has_word", rng, word=shown, **slots),
                f'Yes, the word "{shown}" is written {where}.',
            )
        )
        present = {w.lower() for w in words}
        absent = [w for w in self.words if w.lower() not in present]
        if absent:
            missing = _match_case(rng.choice(absent), shown)
            extra.append(
                QA(
                    question("has_word", rng, word=missing, **slots),
                    f'No, the word "{missing}" is not written {where}.',
                )
            )
        board = _board(context)
        if kind and board is not None and board.color:
            extra.append(
                QA(question("colour", rng, category=kind), f"The {kind} is {board.color}.")
            )
        if kind == "book cover":
            extra.append(
                QA("What is the title of the book?", f'The title of the book is "{lines[0]}".')
            )
        extra.extend(_coloured_text_pairs(context, where, slots, rng))
        caption = context.get("caption")
        if isinstance(caption, str) and caption.strip() and rng.random() < 0.3:
            extra.append(QA("Describe the image briefly.", caption.strip()))
        rng.shuffle(extra)
        pairs.extend(extra[: rng.randint(2, 4)])
        return format_pairs(pairs)


# ---- reading the context -----------------------------------------------------------------


def _things(context: dict[str, Any]) -> list[Thing]:
    instances = context.get("instances")
    if not isinstance(instances, list) or not instances:
        raise ValueError("context has no 'instances' to write about")
    return things_from_instances(instances)


def _background(context: dict[str, Any]) -> str | None:
    """context["background"], else the world background named in a caption ("beige",
    "speckled mint", "gray to peach gradient")."""
    background = context.get("background")
    if isinstance(background, str) and background.strip():
        return background.strip()
    names = "|".join(BACKGROUND_COLOURS)
    pattern = rf"\b((?:speckled )?(?:{names})(?: to (?:{names}) gradient)?) background\b"
    for caption in context.get("captions") or []:
        match = re.search(pattern, str(caption).lower())
        if match:
            return match.group(1)
    return None


def _ocr_lines(context: dict[str, Any]) -> list[str]:
    ocr = context.get("ocr")
    if isinstance(ocr, str):
        ocr = ocr.splitlines()
    if not isinstance(ocr, list):
        raise ValueError("context['ocr'] should be a list of text lines")
    lines = [" ".join(str(line).split()) for line in ocr]
    lines = [line for line in lines if line]
    if not lines:
        raise ValueError("context['ocr'] has no text: nothing to ask about")
    return lines


def _board(context: dict[str, Any]) -> Thing | None:
    instances = context.get("instances")
    if not isinstance(instances, list):
        return None
    boards = [t for t in things_from_instances(instances) if t.category in TEXT_KINDS]
    return boards[0] if len(boards) == 1 else None


def _text_kind(context: dict[str, Any]) -> str | None:
    """The kind of board ("sign", "book cover"...) from the instances, else from the caption."""
    board = _board(context)
    if board is not None:
        return board.category
    texts = [str(context.get("caption") or "")] + [str(c) for c in context.get("captions") or []]
    for text in texts:
        lowered = text.lower()
        for kind in sorted(TEXT_KINDS, key=len, reverse=True):
            if re.search(rf"\b{kind}s?\b", lowered):
                return kind
    return None


def _coloured_text_pairs(
    context: dict[str, Any], where: str, slots: dict[str, str], rng: random.Random
) -> list[QA]:
    """Questions like "What is written in red?" for line colours given in context["texts"]."""
    texts = context.get("texts")
    if not isinstance(texts, list):
        return []
    lines = []
    for entry in texts:
        if isinstance(entry, dict) and entry.get("level", "line") == "line":
            colour = (entry.get("attributes") or {}).get("color")
            if isinstance(entry.get("text"), str) and isinstance(colour, str):
                lines.append((entry["text"], colour))
    counts = Counter(colour for _, colour in lines)
    if len(counts) < 2:
        return []
    pairs = []
    for text, colour in lines:
        if counts[colour] == 1:
            pairs.append(
                QA(
                    question("word_in_colour", rng, color=colour, **slots),
                    f'"{text}" is written in {colour} {where}.',
                )
            )
    return pairs


# ---- conversation questions --------------------------------------------------------------


# ---- reasoning questions -----------------------------------------------------------------


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
        verdict = f"{_capital(number_word(max(a, b)))} is more than {number_word(min(a, b))}, so there are more {plural(more)}."
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


# ---- small helpers -----------------------------------------------------------------------


def _count_phrase(k: int, singular: str) -> str:
    """A counted noun: "no stars", "one star", "three stars"."""
    noun = singular if k == 1 else plural(singular)
    return f"no {noun}" if k == 0 else f"{number_word(k)} {noun}"


def _seen_before(thing: Thing, earlier: Sequence[Thing]) -> bool:
    return any(other.full_name == thing.full_name for other in earlier)


def _match_case(word: str, example: str) -> str:
    if example.isupper():
        return word.upper()
    if example[:1].isupper():
        return word.title()
    return word


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]
