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

from llavakit.teacher_protocol import TeacherRequest, TeacherResult
from llavakit.world.captions import join_items, reading_order
from llavakit.world.perception import QA, perception_pools, pick_pairs
from llavakit.world.phrasing import capital, question
from llavakit.world.reasoning import REASONING_QUESTIONS
from llavakit.world.relations import (
    RELATION_PHRASES,
    Thing,
    category_counts,
    clear_pairs,
    region,
    region_phrase,
    things_from_instances,
)
from llavakit.world.vocabulary import (
    BACKGROUND_COLOURS,
    CATEGORIES,
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
                f"{capital(named)} sits {place}.",
                f"{capital(place)} there is {named}.",
                f"There is {named} {place}.",
                f"{capital(named)} can be seen {place}.",
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
        makers = list(REASONING_QUESTIONS)
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
                QA(question("read_all", rng, **slots), f'{capital(subject)} says "{text}".')
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


# ---- small helpers -----------------------------------------------------------------------


def _seen_before(thing: Thing, earlier: Sequence[Thing]) -> bool:
    return any(other.full_name == thing.full_name for other in earlier)


def _match_case(word: str, example: str) -> str:
    if example.isupper():
        return word.upper()
    if example[:1].isupper():
        return word.title()
    return word
