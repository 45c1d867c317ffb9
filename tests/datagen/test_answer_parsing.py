"""Parsing and checking teacher answers in the formats our prompts ask for."""

from __future__ import annotations

import pytest

from llavakit.datagen.answers import find_leak, parse_pairs, parse_paragraph
from llavakit.datagen.llava import TASKS, parse_answer
from llavakit.datagen.prompts import load_task_prompt


def test_pairs_are_read_in_order():
    text = (
        "Question:\nWhat colour is the bus?\n===\nAnswer:\nIt is red.\n"
        "===\nQuestion:\nHow many people wait?\nThree?\n===\nAnswer:\nThree people.\n===\n"
    )
    assert parse_pairs(text) == [
        ("What colour is the bus?", "It is red."),
        ("How many people wait?\nThree?", "Three people."),
    ]


def test_labels_on_the_same_line_and_bold_labels_are_accepted():
    text = "**Question:** Is it raining?\n===\n**Answer:** No, the sky is clear.  \n"
    assert parse_pairs(text) == [("Is it raining?", "No, the sky is clear.")]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty answer"),
        ("\n===\n  \n", "empty answer"),
        ("The bus is red.", "does not start with 'Question:' or 'Answer:'"),
        ("Answer:\nRed.\n===\nQuestion:\nWhat colour?", "do not alternate"),
        ("Question:\nA?\n===\nQuestion:\nB?\n===\nAnswer:\nC.", "do not alternate"),
        ("Question:\nWhat colour?\n===\nAnswer:\n", "empty answer"),
        ("Question:\nWhat colour?", "the last question has no answer"),
    ],
)
def test_malformed_pairs_are_refused_with_a_reason(text, reason):
    with pytest.raises(ValueError, match=reason):
        parse_pairs(text)


def test_paragraph_must_be_bare_text():
    assert parse_paragraph("  A red bus.\n\nPeople wait.  ") == "A red bus.\n\nPeople wait."
    with pytest.raises(ValueError, match="empty answer"):
        parse_paragraph(" \n")
    with pytest.raises(ValueError, match="markers"):
        parse_paragraph("Question:\nDescribe it.\n===\nAnswer:\nA bus.")


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        ("As the caption says, a dog.", "caption"),
        ("The Captions mention a dog.", "captions"),
        ("Its bounding box is large.", "bounding box"),
        ("The coordinates show it on the left.", "coordinates"),
        ("A well-coordinated team in captioned photos.", None),
        ("A dog on the left of the picture.", None),
    ],
)
def test_mentions_of_hidden_sources_are_found(text, leak):
    assert find_leak(text) == leak


def test_task_answers():
    pair = "Question:\nWhy is the road wet?\n===\nAnswer:\nIt has rained."
    assert parse_answer("complex", pair) == [("Why is the road wet?", "It has rained.")]
    with pytest.raises(ValueError, match="expected one question and answer, got 2"):
        parse_answer("complex", pair + "\n===\n" + pair)
    assert parse_answer("detail", "A wet road.") == [(None, "A wet road.")]
    with pytest.raises(ValueError, match="answer mentions 'bounding box'"):
        parse_answer("conversation", "Question:\nWhere?\n===\nAnswer:\nIn the bounding box.")
    with pytest.raises(ValueError, match="unknown task 'poem'"):
        parse_answer("poem", "A wet road.")


@pytest.mark.parametrize("task", TASKS)
def test_our_own_examples_pass_our_checks(task):
    prompt = load_task_prompt(task)
    assert len(prompt.examples) >= 2
    for example in prompt.examples:
        assert parse_answer(task, example.output)
        assert find_leak(example.output) is None
