"""The answer runner on LLaVA-1.5's own question layouts: questions that share an id.

LLaVA-1.5's TextVQA question file uses the image id as `question_id`, so two questions about one
image share it; the runner must answer, resume and merge them as two questions."""

from __future__ import annotations

import json

from PIL import Image

from llavakit.eval.answer import AnswerSettings, answer_questions, merge_answers
from llavakit.infer.engine import Engine

SUFFIX = "\nReference OCR token: SONY\nAnswer briefly."


def test_questions_sharing_an_id_are_answered_resumed_and_merged(tmp_path, tiny_checkpoint):
    Image.new("RGB", (32, 32), (200, 0, 0)).save(tmp_path / "img1.jpg")
    questions = [
        {"question_id": "img1", "image": "img1.jpg", "text": "What brand?" + SUFFIX},
        {"question_id": "img1", "image": "img1.jpg", "text": "What year?" + SUFFIX},
    ]
    engine = Engine.load(tiny_checkpoint, device="cpu")
    settings = AnswerSettings(batch_size=1, max_new_tokens=3)
    out = tmp_path / "answers.jsonl"
    assert answer_questions(engine, questions[:1], tmp_path, out, settings) == 1
    assert answer_questions(engine, questions, tmp_path, out, settings) == 1  # only the other
    assert answer_questions(engine, questions, tmp_path, out, settings) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in records] == [q["text"] for q in questions]
    assert merge_answers([out, out], tmp_path / "merged.jsonl") == 2
