"""POPE: accuracy, precision, recall, F1 and yes-ratio, by hand."""

from __future__ import annotations

import pytest

from llavakit.eval.tasks.pope import score_pope

QUESTIONS = [
    {"question_id": 1, "category": "random", "label": "yes"},
    {"question_id": 2, "category": "random", "label": "yes"},
    {"question_id": 3, "category": "random", "label": "no"},
    {"question_id": 4, "category": "random", "label": "no"},
    {"question_id": 5, "category": "adversarial", "label": "yes"},
    {"question_id": 6, "category": "adversarial", "label": "yes"},
    {"question_id": 7, "category": "adversarial", "label": "no"},
    {"question_id": 8, "category": "adversarial", "label": "no"},
]
REPLIES = {
    1: "Yes",  # TP
    2: "No",  # FN
    3: "no, there isn't",  # TN
    4: "Yes, there is a cat.",  # FP
    5: "There is a dog.",  # no verdict: unparsed, counts as a FN
    6: "yes",  # TP
    8: "I don't think so.",  # TN; 7 is missing
}


def test_metrics_match_hand_count(write_jsonl):
    questions = write_jsonl("q.jsonl", QUESTIONS)
    answers = write_jsonl("a.jsonl", [{"question_id": k, "text": v} for k, v in REPLIES.items()])
    result = score_pope(questions, answers)
    precision, recall = 100 * 2 / 3, 100 * 2 / 4
    assert list(result["metrics"]) == ["f1", "accuracy", "precision", "recall", "yes_ratio"]
    assert result["metrics"] == pytest.approx(
        {
            "f1": 2 * precision * recall / (precision + recall),
            "accuracy": 50.0,
            "precision": precision,
            "recall": recall,
            "yes_ratio": 37.5,
        }
    )
    adversarial = result["categories"]["adversarial"]
    assert adversarial == pytest.approx(
        {
            "f1": 200 / 3,
            "accuracy": 50.0,
            "precision": 100.0,
            "recall": 50.0,
            "yes_ratio": 25.0,
            "n_questions": 4,
        }
    )
    assert result["categories"]["random"]["f1"] == pytest.approx(50.0)
    assert (result["n_unparsed"], result["missing_ids"]) == (1, ["7"])


def test_answer_field_and_degenerate_model(write_jsonl):
    questions = write_jsonl(
        "q.jsonl", [{"question_id": i, "answer": "no" if i % 2 else "yes"} for i in range(4)]
    )
    answers = write_jsonl("a.jsonl", [{"question_id": i, "text": "No"} for i in range(4)])
    result = score_pope(questions, answers)
    assert result["metrics"] == {
        "f1": 0.0,
        "accuracy": 50.0,
        "precision": 0.0,
        "recall": 0.0,
        "yes_ratio": 0.0,
    }
    assert list(result["categories"]) == ["all"]
    unlabeled = write_jsonl("u.jsonl", [{"question_id": 1}])
    with pytest.raises(
        ValueError,
        match=r"question 1 has no ground truth; expected a field named 'label' or 'answer'",
    ):
        score_pope(unlabeled, write_jsonl("none.jsonl", []))
