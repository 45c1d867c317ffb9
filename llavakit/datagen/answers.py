"""Read teacher answers in the formats our prompts ask for, and refuse the unusable ones.

Question/answer output (conversation, complex reasoning, and the symbolic teacher's):

    Question:
    <question>
    ===
    Answer:
    <answer>
    ===
    Question:
    ...

Descriptions are a bare paragraph. Every error is a ValueError with a short, stable reason, so
failures can be counted by reason and a teacher can be asked again.
"""

from __future__ import annotations

import re

_SEPARATOR = re.compile(r"^[ \t]*===[ \t]*$", re.MULTILINE)
_LABEL = re.compile(r"^\**[ \t]*(question|answer)[ \t]*:[ \t]*\**", re.IGNORECASE)
_MARKERS = re.compile(
    r"^[ \t]*(===|\**[ \t]*(question|answer)[ \t]*:)", re.IGNORECASE | re.MULTILINE
)
_LEAK = re.compile(r"\b(captions?|bounding[ -]box(es)?|coordinates?)\b", re.IGNORECASE)


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """(question, answer) pairs of a `Question:/===/Answer:` answer, in order."""
    blocks = [block.strip() for block in _SEPARATOR.split(text)]
    blocks = [block for block in blocks if block]
    if not blocks:
        raise ValueError("empty answer")
    turns: list[tuple[str, str]] = []
    for block in blocks:
        label = _LABEL.match(block)
        if label is None:
            raise ValueError("a part does not start with 'Question:' or 'Answer:'")
        kind = label.group(1).lower()
        body = block[label.end() :].strip()
        if not body:
            raise ValueError(f"empty {kind}")
        expected = "question" if len(turns) % 2 == 0 else "answer"
        if kind != expected:
            raise ValueError("questions and answers do not alternate")
        turns.append((kind, body))
    if len(turns) % 2:
        raise ValueError("the last question has no answer")
    return [(turns[i][1], turns[i + 1][1]) for i in range(0, len(turns), 2)]


def parse_paragraph(text: str) -> str:
    """A description answer: non-empty text with no question/answer markers."""
    text = text.strip()
    if not text:
        raise ValueError("empty answer")
    if _MARKERS.search(text):
        raise ValueError("description contains question/answer markers")
    return text


def find_leak(text: str) -> str | None:
    """The first mention of the teacher's hidden sources (captions, boxes, coordinates), if any.

    The student only sees the image, so an answer that talks about captions or coordinates
    teaches it to refer to things that are not there.
    """
    match = _LEAK.search(text)
    return match.group(0).lower() if match else None
