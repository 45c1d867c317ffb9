"""Question wordings shared by the symbolic teacher and the world benchmark.

Each form lists its wordings with the benchmark's own wording first. The teacher uses that
first wording about half the time and a paraphrase otherwise, so a tiny model trained on the
teacher's data has seen the exact benchmark questions and still learns some variety.
"""

from __future__ import annotations

import random
from types import MappingProxyType

CANONICAL_SHARE = 0.5
"""How often the teacher asks a question in the benchmark's exact wording."""

QUESTIONS = MappingProxyType(
    {
        "existence": (
            "Is there {thing} in the image? Answer yes or no.",
            "Is there {thing} in the image?",
            "Can you see {thing} in the picture?",
            "Does the image contain {thing}?",
            "Is {thing} visible in the image?",
        ),
        "colour": (
            "What colour is the {category}?",
            "What color is the {category}?",
            "Which colour does the {category} have?",
            "Tell me the colour of the {category}.",
        ),
        "count": (
            "How many {plural} are there in the image?",
            "How many {plural} can you see?",
            "Count the {plural} in the image.",
            "What is the number of {plural} in the picture?",
        ),
        "count_all": (
            "How many objects are there in the image?",
            "How many shapes can you see?",
            "Count the objects in the image.",
            "How many things are in the picture?",
        ),
        "count_colour": (
            "How many {color} objects are there in the image?",
            "How many {color} shapes can you see?",
            "Count the {color} objects in the picture.",
        ),
        "horizontal": (
            "Is the {a} to the left or right of the {b}?",
            "Is the {a} on the left or the right side of the {b}?",
            "Where is the {a} compared to the {b}: left or right?",
        ),
        "vertical": (
            "Is the {a} above or below the {b}?",
            "Is the {a} placed above the {b} or below it?",
            "Where is the {a} compared to the {b}: above or below?",
        ),
        "size": (
            "Is the {a} large or small?",
            "What size is the {a}?",
            "Is the {a} a large one or a small one?",
        ),
        "read_word": (
            "What word is written on the {kind}?",
            "What does the {kind} say?",
            "Which word appears on the {kind}?",
            "Read the word on the {kind}.",
        ),
        "read_all": (
            "What is written on the {kind}?",
            "What does the text on the {kind} say?",
            "Read the text on the {kind}.",
        ),
        "read_first_line": (
            "What is written on the first line of the {kind}?",
            "What does the first line of the {kind} say?",
            "Read the first line of text on the {kind}.",
        ),
        "read_last_line": (
            "What is written on the last line of the {kind}?",
            "What does the bottom line of the {kind} say?",
        ),
        "line_count": (
            "How many lines of text are on the {kind}?",
            "How many lines of writing does the {kind} have?",
        ),
        "word_count": (
            "How many words are written on the {kind}?",
            "Count the words on the {kind}.",
        ),
        "has_word": (
            'Is the word "{word}" written on the {kind}? Answer yes or no.',
            'Does the {kind} show the word "{word}"?',
        ),
        "word_in_colour": (
            "What is written in {color} on the {kind}?",
            "Which text on the {kind} is {color}?",
        ),
        "detail": (
            "Describe the image in detail.",
            "Give a detailed description of the picture.",
            "What can you see in this image? Describe everything.",
        ),
    }
)


def question(form: str, rng: random.Random | None = None, **slots: str) -> str:
    """A question of `form`; the benchmark wording when `rng` is None, else sometimes a paraphrase."""
    wordings = QUESTIONS[form]
    if rng is None or len(wordings) == 1 or rng.random() < CANONICAL_SHARE:
        return wordings[0].format(**slots)
    return rng.choice(wordings[1:]).format(**slots)


def capital(text: str) -> str:
    """The text with its first letter upper-cased (the rest kept)."""
    return text[:1].upper() + text[1:]
