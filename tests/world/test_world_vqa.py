"""Short-answer VQA records: LLaVA-1.5's layout, and every answer true to the annotation.

Answers are recomputed here from the annotation with plain logic (centres for sides, counting
by hand), not through llavakit.world.perception."""

from __future__ import annotations

import json
import re

from llavakit.world.annotations import load_split
from llavakit.world.relations import things_from_image
from llavakit.world.vqa import RESPONSE_FORMAT, write_vqa

NUMBERS = {str(i): i for i in range(10)}


def check_answer(question: str, answer: str, image) -> None:
    things = things_from_image(image)
    names = [f"{t.color} {t.category}" for t in things]
    if match := re.match(
        r"(?:Is there|Can you see|Does the image contain|Is) an? (\w+ \w+)", question
    ):
        assert answer == ("yes" if match.group(1) in names else "no"), (question, answer, names)
    elif match := re.search(r"colou?r (?:is|does) the (\w+)|colour of the (\w+)", question):
        shape = match.group(1) or match.group(2)
        assert [t.color for t in things if t.category == shape] == [answer], (question, answer)
    elif question.startswith(("How many", "Count", "What is the number")):
        if re.search(r"objects|shapes|things", question) and not re.search(
            r"\b(red|orange|yellow|green|blue|purple|pink|black)\b", question
        ):
            expected = len(things)
        elif colour := re.search(r"\b(red|orange|yellow|green|blue|purple|pink|black)\b", question):
            expected = sum(t.color == colour.group(1) for t in things)
        else:
            expected = sum(question.count(f" {t.category}") > 0 for t in things)
        assert NUMBERS[answer] == expected, (question, answer, names)
    elif " large or small" in question or "size" in question or "large one" in question:
        assert answer in ("large", "small")
    else:
        pair = re.search(r"the (\w+ \w+) .*the (\w+ \w+)", question)
        assert pair, question
        a = next(t for t in things if f"{t.color} {t.category}" == pair.group(1))
        b = next(t for t in things if f"{t.color} {t.category}" == pair.group(2))
        if answer in ("left", "right"):
            assert (a.center[0] < b.center[0]) == (answer == "left"), (question, answer)
        else:
            assert (a.center[1] < b.center[1]) == (answer == "above"), (question, answer)


def test_vqa_records_follow_llava15_and_answer_truly(world_dir, tmp_path):
    split = load_split(world_dir, "train")
    out = tmp_path / "vqa.json"
    count = write_vqa(split, out, seed=3, questions=12)
    records = json.loads(out.read_text())
    scenes = {image.file_name: image for image in split.scenes()}
    assert count == len(records) == len(scenes)
    asked = 0
    for record in records:
        image = scenes[record["image"]]
        turns = record["conversations"]
        assert 2 <= len(turns) <= 24 and len(turns) % 2 == 0
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        assert turns[0]["value"].startswith("<image>\n")
        assert all("<image>" not in t["value"] for t in turns[1:])
        for human, gpt in zip(turns[::2], turns[1::2]):
            question, prompt = human["value"].removeprefix("<image>\n").rsplit("\n", 1)
            assert prompt == RESPONSE_FORMAT
            assert len(gpt["value"].split()) == 1
            check_answer(question, gpt["value"], image)
            asked += 1
    assert asked > 5 * len(records)
    existence = [
        t["value"] for r in records for h, t in zip(r["conversations"][::2], r["conversations"][1::2])
        if "yes or no" in h["value"] or h["value"].split("\n")[-2].startswith(("Is there", "Does", "Can you"))
    ]  # fmt: skip
    assert 0.35 < existence.count("yes") / len(existence) < 0.65


def test_vqa_is_deterministic_and_never_uses_eval_images(world_dir, tmp_path):
    train = load_split(world_dir, "train")
    write_vqa(train, tmp_path / "a.json", seed=1)
    write_vqa(train, tmp_path / "b.json", seed=1)
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()
    eval_files = {image.file_name for image in load_split(world_dir, "eval").images}
    assert not eval_files & {r["image"] for r in json.loads((tmp_path / "a.json").read_text())}
