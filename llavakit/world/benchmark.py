"""The world benchmark: questions with exact answers on held-out images, and their scoring.

Questions are written in the LLaVA question JSONL layout
(`{"question_id", "image", "text", "category", "answer"}`), one or more per eval image, in the
same wording the symbolic teacher uses most often in training data:

- existence: "Is there a red circle in the image? Answer yes or no." (exactly balanced yes/no;
  half the "no" questions are near misses: a present colour or a present shape);
- colour: "What colour is the star?" (only when the image has exactly one star);
- counting: "How many objects are there in the image?" or, for a shape that appears more than
  once, "How many stars are there in the image?" (answers 1-5);
- position: "Is the X to the left or right of the Y?" / "Is the X above or below the Y?" (only
  for uniquely named objects whose boxes are clearly apart on that axis);
- reading: "What word is written on the sign?" (one-word images) or "What is written on the
  first line of the sign?"; `reading_small` for deliberately small text;
- detail: "Describe the image in detail.", with the list of "<colour> <category>" names to be
  mentioned as the answer.

`score_answer` turns one prediction into a score in [0, 1] for its category.
"""

from __future__ import annotations

import json
import random
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType

from llavakit.files import write_text_atomic
from llavakit.world.annotations import WorldImage, WorldSplit, load_split
from llavakit.world.phrasing import question
from llavakit.world.relations import (
    Thing,
    category_counts,
    clear_pairs,
    things_from_image,
)
from llavakit.world.vocabulary import (
    CATEGORIES,
    COLOUR_NAMES,
    NUMBER_WORDS,
    OBJECT_COLOURS,
    plural,
    with_article,
)


@dataclass(frozen=True)
class BenchmarkQuestion:
    question_id: str
    image: str
    """File name relative to the world's `images/` folder."""
    text: str
    category: str
    answer: str | list[str]
    """The exact answer; for "detail", the object names the description should mention."""

    def to_json(self) -> dict:
        return asdict(self)


def build_benchmark(split: WorldSplit, seed: int = 0) -> list[BenchmarkQuestion]:
    """Questions for every image of `split`, deterministic for a seed."""
    rng = random.Random(f"llavakit-world-benchmark:{seed}")
    scenes = sorted(split.scenes(), key=lambda image: image.image_id)
    answers = ["yes", "no"] * (len(scenes) // 2) + (["yes"] if len(scenes) % 2 else [])
    rng.shuffle(answers)
    questions: list[BenchmarkQuestion] = []
    for image, existence_answer in zip(scenes, answers):
        things = things_from_image(image)
        questions.append(_existence(image, things, existence_answer == "yes", rng))
        for make in (_colour, _counting, _position, _detail):
            made = make(image, things, rng)
            if made is not None:
                questions.append(made)
    for image in sorted(split.text_images(), key=lambda image: image.image_id):
        made = _reading(image)
        if made is not None:
            questions.append(made)
    return questions


def write_benchmark(
    world_dir: str | Path, out_path: str | Path, split: str = "eval", seed: int = 0
) -> list[BenchmarkQuestion]:
    """Write the benchmark of a generated world's split as question JSONL; returns it."""
    questions = build_benchmark(load_split(world_dir, split), seed)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_path, "".join(json.dumps(item.to_json()) + "\n" for item in questions))
    return questions


def _qid(image: WorldImage, category: str) -> str:
    return f"{image.image_id}-{category}"


def _existence(
    image: WorldImage, things: Sequence[Thing], present: bool, rng: random.Random
) -> BenchmarkQuestion:
    if present:
        name = rng.choice(things).name
    else:
        names = {thing.name for thing in things}
        absent = [f"{c} {k}" for c in OBJECT_COLOURS for k in CATEGORIES if f"{c} {k}" not in names]
        near = [n for n in absent if any(n.split()[0] == t.color or n.split()[1] == t.category for t in things)]  # fmt: skip
        name = rng.choice(near if near and rng.random() < 0.5 else absent)
    return BenchmarkQuestion(
        _qid(image, "existence"),
        image.file_name,
        question("existence", thing=with_article(name)),
        "existence",
        "yes" if present else "no",
    )


def _colour(
    image: WorldImage, things: Sequence[Thing], rng: random.Random
) -> BenchmarkQuestion | None:
    counts = category_counts(things)
    unique = [thing for thing in things if counts[thing.category] == 1]
    if not unique:
        return None
    thing = rng.choice(unique)
    return BenchmarkQuestion(
        _qid(image, "colour"),
        image.file_name,
        question("colour", category=thing.category),
        "colour",
        thing.color,
    )


def _counting(image: WorldImage, things: Sequence[Thing], rng: random.Random) -> BenchmarkQuestion:
    """All objects, or one repeated category, so that answers spread over 1-5."""
    counts = category_counts(things)
    repeated = sorted(category for category, k in counts.items() if k > 1)
    if repeated and rng.random() < 0.5:
        category = rng.choice(repeated)
        text, answer = question("count", plural=plural(category)), counts[category]
    else:
        text, answer = question("count_all"), len(things)
    return BenchmarkQuestion(
        _qid(image, "counting"), image.file_name, text, "counting", str(answer)
    )


def _position(
    image: WorldImage, things: Sequence[Thing], rng: random.Random
) -> BenchmarkQuestion | None:
    pairs = clear_pairs(things)
    if not pairs:
        return None
    a, b, axis, relation = rng.choice(pairs)
    return BenchmarkQuestion(
        _qid(image, "position"),
        image.file_name,
        question(axis, a=a.name, b=b.name),
        "position",
        relation,
    )


def _detail(image: WorldImage, things: Sequence[Thing], rng: random.Random) -> BenchmarkQuestion:
    names = list(dict.fromkeys(thing.name for thing in things))
    return BenchmarkQuestion(
        _qid(image, "detail"), image.file_name, question("detail"), "detail", names
    )


def _reading(image: WorldImage) -> BenchmarkQuestion | None:
    lines = image.lines()
    if not lines:
        return None
    category = "reading_small" if image.small_text else "reading"
    if len(lines) == 1 and len(lines[0].split()) == 1:
        text = question("read_word", kind=image.kind)
    else:
        text = question("read_first_line", kind=image.kind)
    return BenchmarkQuestion(_qid(image, category), image.file_name, text, category, lines[0])


# ---- scoring -----------------------------------------------------------------------------

_RELATION_WORDS = MappingProxyType(
    {w: w for w in ("left", "right", "above", "below")}
    | {"under": "below", "beneath": "below", "over": "above"}
)
_NUMBER_VALUES = MappingProxyType({word: value for value, word in enumerate(NUMBER_WORDS)})
_COLOUR_WORDS = MappingProxyType({name: name for name in COLOUR_NAMES})
_YES_NO = MappingProxyType({"yes": "yes", "no": "no"})


def normalise(text: str) -> str:
    """Lower case, accents dropped ("café" -> "cafe"), punctuation to spaces, single spaces."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(re.sub(r"[^0-9a-z]+", " ", plain).split())


def score_answer(category: str, answer: str | Sequence[str], prediction: str) -> float:
    """Score one prediction against the benchmark answer, in [0, 1].

    - existence: the first "yes"/"no" word of the prediction must equal the answer;
    - colour: the first colour word mentioned must be the answer;
    - counting: the first number (digits or a number word up to ten) must equal the answer;
    - position: the first of left/right/above/below (under/beneath count as below) must match;
    - reading, reading_small: the normalised answer occurs in the normalised prediction as
      whole words, case-insensitive (the MultimodalOCR contains-match protocol);
    - detail: the fraction of answer names ("red circle") that occur in the prediction, a
      plural ("red circles") counting as a mention;
    - any other category: exact match after normalisation.
    """
    words = normalise(prediction).split()
    if category == "detail":
        names = [answer] if isinstance(answer, str) else list(answer)
        if not names:
            raise ValueError("a detail answer needs at least one object name")
        text = " " + " ".join(words) + " "
        found = sum(
            1 for name in names if re.search(rf" {re.escape(normalise(name))}(e?s)? ", text)
        )
        return found / len(names)
    if not isinstance(answer, str):
        raise ValueError(f"category {category!r} needs a string answer, got {answer!r}")
    expected = normalise(answer)
    if category == "existence":
        return float(_first(words, _YES_NO) == expected)
    if category == "colour":
        return float(_first(words, _COLOUR_WORDS) == expected)
    if category == "counting":
        found = None
        for word in words:
            if word.isdigit():
                found = int(word)
                break
            if word in _NUMBER_VALUES:
                found = _NUMBER_VALUES[word]
                break
        return float(found is not None and str(found) == expected)
    if category == "position":
        return float(_first(words, _RELATION_WORDS) == expected)
    if category in ("reading", "reading_small"):
        if not expected:
            raise ValueError("a reading answer must contain letters or digits")
        return float(f" {expected} " in " " + " ".join(words) + " ")
    return float(" ".join(words) == expected)


def _first(words: Sequence[str], mapping: Mapping[str, str]) -> str | None:
    for word in words:
        if word in mapping:
            return mapping[word]
    return None
