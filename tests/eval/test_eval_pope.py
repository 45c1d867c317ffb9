"""POPE: accuracy, precision, recall, F1 and yes-ratio per split and their means, by hand;
LLaVA-1.5's question file with the labels of the POPE release. The official reader's decisions
on 32 crafted replies are in test_eval_crafted.py."""

from __future__ import annotations

import json

import pytest

from llavakit.eval.tasks.pope import prepare_questions, score_pope

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


def test_lenient_metrics_match_hand_count(write_jsonl):
    questions = write_jsonl("q.jsonl", QUESTIONS)
    answers = write_jsonl("a.jsonl", [{"question_id": k, "text": v} for k, v in REPLIES.items()])
    result = score_pope(questions, answers, protocol="lenient")
    assert list(result["metrics"]) == ["f1", "accuracy", "precision", "recall", "yes_ratio"]
    # means of the two splits: random (f1 50, p 50, r 50, yes 50), adversarial (below)
    assert result["metrics"] == pytest.approx(
        {
            "f1": (50 + 200 / 3) / 2,
            "accuracy": 50.0,
            "precision": 75.0,
            "recall": 50.0,
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


def test_official_metrics_match_hand_count(write_jsonl):
    questions = write_jsonl("q.jsonl", QUESTIONS)
    answers = write_jsonl("a.jsonl", [{"question_id": k, "text": v} for k, v in REPLIES.items()])
    result = score_pope(questions, answers)
    assert result["protocol"] == "official"
    # eval_pope.py: 5 "There is a dog." is yes (TP); 8 "I don't think so." is yes (FP)
    predictions = {i["question_id"]: i["prediction"] for i in result["items"]}
    assert predictions == {
        "1": "yes",
        "2": "no",
        "3": "no",
        "4": "yes",
        "5": "yes",
        "6": "yes",
        "7": None,
        "8": "yes",
    }
    assert result["categories"]["adversarial"]["f1"] == pytest.approx(80.0)
    assert result["metrics"]["f1"] == pytest.approx((50 + 80) / 2)
    assert result["metrics"]["recall"] == pytest.approx(75.0)
    assert result["n_unparsed"] == 0


def _coco_pope(folder, split, labels):
    folder.mkdir(exist_ok=True)
    rows = [
        {"question_id": i, "image": f"COCO_{split}_{i}.jpg", "text": f"Is there a {i}?"}
        | {"label": label}
        for i, label in enumerate(labels, start=1)
    ]
    (folder / f"coco_pope_{split}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_llava_question_file_gets_labels_from_the_release(tmp_path, write_jsonl):
    _coco_pope(tmp_path / "coco", "random", ["yes", "no"])
    _coco_pope(tmp_path / "coco", "popular", ["no"])
    questions = write_jsonl(
        "llava_pope_test.jsonl",
        [
            {"question_id": 10, "image": "COCO_random_1.jpg", "category": "random"},
            {"question_id": 11, "image": "COCO_popular_1.jpg", "category": "popular"},
            {"question_id": 12, "image": "COCO_random_2.jpg", "category": "random"},
        ],
    )
    answers = write_jsonl(
        "a.jsonl", [{"question_id": 12, "text": "No"}, {"question_id": 10, "text": "Yes"}]
    )
    result = score_pope(questions, answers, annotation_dir=tmp_path / "coco")
    truth = {i["question_id"]: (i["answer"], i["correct"]) for i in result["items"]}
    assert truth == {"10": ("yes", True), "11": ("no", False), "12": ("no", True)}
    _coco_pope(tmp_path / "coco", "random", ["no", "yes"][::-1])  # same labels, other images
    (tmp_path / "coco" / "coco_pope_random.json").write_text(
        '{"question_id": 1, "image": "other.jpg", "label": "yes"}\n'
        '{"question_id": 2, "image": "COCO_random_2.jpg", "label": "no"}\n'
    )
    with pytest.raises(ValueError, match="record 1 is about image 'other.jpg'"):
        score_pope(questions, answers, annotation_dir=tmp_path / "coco")


def test_prepare_from_the_pope_release(tmp_path):
    _coco_pope(tmp_path, "adversarial", ["yes"])
    _coco_pope(tmp_path, "random", ["no", "yes"])
    records = prepare_questions(tmp_path)
    assert [(r["question_id"], r["category"], r["label"]) for r in records] == [
        ("adversarial/1", "adversarial", "yes"),
        ("random/1", "random", "no"),
        ("random/2", "random", "yes"),
    ]
    assert records[0]["text"] == (
        "Is there a 1?\nAnswer the question using a single word or phrase."
    )
    with pytest.raises(ValueError, match="none of coco_pope_adversarial.json"):
        prepare_questions(tmp_path / "empty")


def test_answer_field_and_degenerate_model(write_jsonl):
    questions = write_jsonl(
        "q.jsonl", [{"question_id": i, "answer": "no" if i % 2 else "yes"} for i in range(4)]
    )
    answers = write_jsonl("a.jsonl", [{"question_id": i, "text": "No"} for i in range(4)])
    result = score_pope(questions, answers)  # one split: its metrics are the means
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
