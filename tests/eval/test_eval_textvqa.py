"""Text VQA in the MultimodalOCR protocol: contains-match, case-insensitive."""

from __future__ import annotations

import json

import pytest

from llavakit.eval.tasks.textvqa import contains_answer, score_textvqa


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        ("The sign says COCA COLA.", ["Coca Cola"], True),
        ("It reads STRASSE", ["straße"], True),  # Unicode case folding
        ("FIRE exit", ["\ufb01re"], True),  # the "fi" ligature, NFKC-normalised
        ("Hello\n  World", ["hello world"], True),  # whitespace collapsed
        ("stop", ["Sto p"], False),
        ("", ["", "12"], False),  # empty prediction; empty answers are ignored
        ("1234", ["12"], True),  # contains, not equals: the protocol's known leniency
    ],
)
def test_contains_answer(prediction, answers, expected):
    assert contains_answer(prediction, answers) is expected


def test_accuracy_over_all_questions(write_jsonl):
    questions = write_jsonl(
        "q.jsonl",
        [
            {"question_id": 1, "answers": ["Coca Cola", "coca-cola"]},
            {"question_id": 2, "answers": ["straße"]},
            {"question_id": 3, "answers": ["", "12"]},
            {"question_id": 4, "answer": "stop"},
            {"question_id": 5, "answers": ["ok"]},  # no answer given: wrong
        ],
    )
    answers = write_jsonl(
        "a.jsonl",
        [
            {"question_id": 1, "text": "The sign says COCA COLA."},
            {"question_id": 2, "text": "It reads STRASSE"},
            {"question_id": 3, "text": ""},
            {"question_id": 4, "text": "Sto p"},
        ],
    )
    result = score_textvqa(questions, answers, dataset="ST-VQA")
    assert result["benchmark"] == "ST-VQA"
    assert result["metrics"] == {"accuracy": pytest.approx(40.0)}
    assert [i["correct"] for i in result["items"]] == [True, True, False, False, False]
    assert result["missing_ids"] == ["5"]


def test_textvqa_annotation_file_is_a_question_file(tmp_path, write_jsonl):
    annotations = tmp_path / "TextVQA_0.5.1_val.json"
    data = [
        {"question_id": 34602, "question": "what is written?", "answers": ["nous"] * 10},
        {"question_id": 34603, "question": "which brand?", "answers": ["Sony", "sony"]},
    ]
    annotations.write_text(json.dumps({"dataset_name": "textvqa", "data": data}))
    answers = write_jsonl(
        "a.jsonl", [{"question_id": 34602, "text": "Nous"}, {"question_id": 34603, "text": "LG"}]
    )
    result = score_textvqa(annotations, answers)
    assert (result["benchmark"], result["metrics"]["accuracy"]) == ("TextVQA", 50.0)


def test_bad_inputs(write_jsonl):
    answers = write_jsonl("a.jsonl", [])
    with pytest.raises(ValueError, match="unknown text-VQA dataset 'vqav2'"):
        score_textvqa(
            write_jsonl("q.jsonl", [{"question_id": 1, "answer": "x"}]), answers, dataset="vqav2"
        )
    with pytest.raises(ValueError, match=r"question 1: all answers are empty"):
        score_textvqa(write_jsonl("q1.jsonl", [{"question_id": 1, "answers": ["", " "]}]), answers)
    with pytest.raises(ValueError, match=r"question 1: expected 'answers' \(a list of strings\)"):
        score_textvqa(write_jsonl("q2.jsonl", [{"question_id": 1, "answers": [3]}]), answers)
