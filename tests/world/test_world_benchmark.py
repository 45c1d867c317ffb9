"""The world benchmark: answers recomputed from the pixels' annotation, balance, and scoring."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from llavakit.world.annotations import load_split
from llavakit.world.benchmark import build_benchmark, score_answer, write_benchmark
from llavakit.world.vocabulary import CATEGORIES, plural

SINGULAR = {plural(c): c for c in CATEGORIES}


@pytest.fixture(scope="module")
def questions(world_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "questions.jsonl"
    write_benchmark(world_dir, path)
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_questions_use_the_llava_layout_and_eval_images_only(world_dir, questions):
    held_out = {image.file_name for image in load_split(world_dir, "eval").images}
    ids = [q["question_id"] for q in questions]
    assert len(ids) == len(set(ids))
    for q in questions:
        assert set(q) == {"question_id", "image", "text", "category", "answer"}
        assert q["image"] in held_out
    counts = Counter(q["category"] for q in questions)
    assert set(counts) == {
        "existence",
        "colour",
        "counting",
        "position",
        "reading",
        "reading_small",
        "detail",
    }
    assert counts["existence"] == counts["detail"] == counts["counting"] == 15
    assert counts["reading"] + counts["reading_small"] == 6


def test_answers_are_true_to_the_annotation(world_dir, questions):
    images = {image.file_name: image for image in load_split(world_dir, "eval").images}
    for q in questions:
        image = images[q["image"]]
        names = [f"{o.color} {o.category}" for o in image.objects]
        text, answer = q["text"], q["answer"]
        if q["category"] == "existence":
            name = re.fullmatch(
                r"Is there an? (\w+ \w+) in the image\? Answer yes or no\.", text
            ).group(1)
            assert answer == ("yes" if name in names else "no")
        elif q["category"] == "colour":
            category = re.fullmatch(r"What colour is the (\w+)\?", text).group(1)
            (obj,) = [o for o in image.objects if o.category == category]
            assert answer == obj.color
        elif q["category"] == "counting":
            if text == "How many objects are there in the image?":
                expected = len(image.objects)
            else:
                noun = re.fullmatch(r"How many (\w+) are there in the image\?", text).group(1)
                expected = sum(o.category == SINGULAR[noun] for o in image.objects)
            assert answer == str(expected) and 1 <= expected <= 5
        elif q["category"] == "position":
            m = re.fullmatch(
                r"Is the (\w+ \w+) (to the left or right of|above or below) the (\w+ \w+)\?", text
            )
            (a,) = [o for o in image.objects if f"{o.color} {o.category}" == m.group(1)]
            (b,) = [o for o in image.objects if f"{o.color} {o.category}" == m.group(3)]
            axis = 0 if "left" in m.group(2) else 1
            a_end, b_end = a.bbox[axis] + a.bbox[axis + 2], b.bbox[axis] + b.bbox[axis + 2]
            assert a_end < b.bbox[axis] or b_end < a.bbox[axis], "relation must be clear-cut"
            before = a.bbox[axis] < b.bbox[axis]
            assert (
                answer
                == (["left", "right"] if axis == 0 else ["above", "below"])[0 if before else 1]
            )
        elif q["category"].startswith("reading"):
            kind = re.search(r"on the (.+?)\?$", text).group(1)
            assert kind == image.kind or kind.endswith(image.kind)
            assert answer == image.lines()[0]
            assert q["category"] == ("reading_small" if image.small_text else "reading")
        else:
            assert text == "Describe the image in detail."
            assert sorted(answer) == sorted(set(names))


def test_existence_is_balanced_and_position_answers_vary(world_dir):
    split = load_split(world_dir, "train")  # more scenes than eval
    built = build_benchmark(split, seed=3)
    existence = Counter(q.answer for q in built if q.category == "existence")
    assert existence["yes"] == existence["no"] or abs(existence["yes"] - existence["no"]) == 1
    positions = Counter(q.answer for q in built if q.category == "position")
    assert len(positions) >= 3
    counts = Counter(q.answer for q in built if q.category == "counting")
    assert len(counts) >= 4 and max(counts.values()) < 0.5 * sum(counts.values())
    assert built == build_benchmark(split, seed=3)
    assert built != build_benchmark(split, seed=4)


@pytest.mark.parametrize(
    "category, answer, prediction, score",
    [
        ("existence", "yes", "Yes, there is a red circle in the image.", 1.0),
        ("existence", "no", "No.", 1.0),
        ("existence", "no", "There is no red circle.", 1.0),
        ("existence", "yes", "No, yes.", 0.0),
        ("existence", "yes", "", 0.0),
        ("existence", "yes", "I cannot tell.", 0.0),
        ("colour", "green", "The star is green.", 1.0),
        ("colour", "green", "GREEN", 1.0),
        ("colour", "green", "It is blue, not green.", 0.0),
        ("colour", "green", "The star on the mint background is green.", 1.0),
        ("colour", "green", "greenish", 0.0),
        ("counting", "3", "There are three circles in the image.", 1.0),
        ("counting", "3", "3", 1.0),
        ("counting", "3", "There are 4 circles.", 0.0),
        ("counting", "1", "There is one cross.", 1.0),
        ("counting", "2", "no idea", 0.0),
        ("position", "left", "The red circle is to the left of the blue star.", 1.0),
        ("position", "below", "It is beneath the star.", 1.0),
        ("position", "right", "Left.", 0.0),
        ("position", "above", "The circle is above the star, not below.", 1.0),
        ("reading", "APPLE", 'The sign says "apple".', 1.0),
        ("reading", "open late", "OPEN LATE!", 1.0),
        ("reading", "art", "A party poster.", 0.0),
        ("reading", "Café", "CAFE", 1.0),
        ("reading", "bread", "", 0.0),
        (
            "detail",
            ["red circle", "blue star"],
            "A large red circle sits next to a small blue star.",
            1.0,
        ),
        ("detail", ["red circle", "blue star"], "Two red circles.", 0.5),
        ("detail", ["green cross", "red circle"], "Green crosses and nothing else.", 0.5),
        ("detail", ["red circle", "blue star"], "A red star and a blue circle.", 0.0),
    ],
)
def test_score_answer(category, answer, prediction, score):
    assert score_answer(category, answer, prediction) == score


def test_score_answer_refuses_malformed_answers():
    with pytest.raises(ValueError, match="detail"):
        score_answer("detail", [], "anything")
    with pytest.raises(ValueError, match="string answer"):
        score_answer("colour", ["red"], "red")
    with pytest.raises(ValueError, match="letters or digits"):
        score_answer("reading", "!!", "!!")
