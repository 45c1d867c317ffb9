"""`llavakit eval answer`: batched, sharded, resumable answering through the engine."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from llavakit.eval.answer import AnswerSettings, answer_questions, chunk, merge_answers
from llavakit.infer.engine import Engine


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    return Engine.load(tiny_checkpoint, device="cpu")


@pytest.fixture()
def questions(tmp_path):
    for i, colour in enumerate([(200, 0, 0), (0, 200, 0), (0, 0, 200)]):
        Image.new("RGB", (32, 32), colour).save(tmp_path / f"{i}.png")
    return [
        {"question_id": q, "image": f"{q % 3}.png" if q != 4 else None, "text": f"Question {q}?"}
        for q in range(7)
    ]


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_shards_merge_to_the_unsharded_answers(tmp_path, engine, questions):
    settings = AnswerSettings(batch_size=3, max_new_tokens=6)
    whole = tmp_path / "whole.jsonl"
    assert answer_questions(engine, questions, tmp_path, whole, settings) == 7
    shards = []
    for index in range(3):
        shard = tmp_path / f"shard{index}.jsonl"
        part = AnswerSettings(batch_size=2, max_new_tokens=6, num_chunks=3, chunk_idx=index)
        answer_questions(engine, questions, tmp_path, shard, part)
        shards.append(shard)
    merged = tmp_path / "merged.jsonl"
    assert merge_answers(shards, merged) == 7
    by_id = {r["question_id"]: r["text"] for r in read(whole)}
    assert {r["question_id"]: r["text"] for r in read(merged)} == by_id
    first = read(whole)[0]
    assert set(first) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}


def test_rerun_skips_answered_and_redoes_a_torn_line(tmp_path, engine, questions):
    out = tmp_path / "answers.jsonl"
    settings = AnswerSettings(batch_size=4, max_new_tokens=4)
    answer_questions(engine, questions[:3], tmp_path, out, settings)
    with out.open("a") as handle:
        handle.write('{"question_id": 3, "te')  # killed mid-write
    assert answer_questions(engine, questions, tmp_path, out, settings) == 4
    ids = [r["question_id"] for r in read(out)]
    assert sorted(ids) == list(range(7)) and len(ids) == 7
    assert answer_questions(engine, questions, tmp_path, out, settings) == 0


def test_missing_image_names_the_question(tmp_path, engine, questions):
    questions[2]["image"] = "nope.png"
    with pytest.raises(FileNotFoundError, match="question 2: image .*nope.png does not exist"):
        answer_questions(engine, questions, tmp_path, tmp_path / "a.jsonl")


def test_chunking_covers_everything_once():
    items = list(range(10))
    parts = [chunk(items, 4, i) for i in range(4)]
    assert sum(parts, []) == items
    with pytest.raises(ValueError, match="chunk index 4"):
        chunk(items, 4, 4)
