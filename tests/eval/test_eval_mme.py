"""MME: acc, acc+ and score per subtask, perception and cognition totals, by hand; MME's own
result layout. The official reader's decisions on 34 crafted replies are in
test_eval_crafted.py; LLaVAR's released OCR results in test_eval_conformance.py."""

from __future__ import annotations

import pytest

from llavakit.eval.tasks.mme import prepare_questions, score_mme, score_mme_results


def _q(qid, category, image, answer):
    return {"question_id": qid, "category": category, "image": image, "text": "?", "answer": answer}


QUESTIONS = [
    _q("e1a", "existence", "e/1.jpg", "Yes"),
    _q("e1b", "existence", "e/1.jpg", "No"),
    _q("e2a", "existence", "e/2.jpg", "Yes"),
    _q("e2b", "existence", "e/2.jpg", "No"),
    _q("o3a", "ocr", "o/3.jpg", "Yes"),  # lower-case subtask name: read as "OCR"
    _q("o3b", "ocr", "o/3.jpg", "No"),
    _q("c4a", "code_reasoning", "c/4.png", "Yes"),
    _q("c4b", "code_reasoning", "c/4.png", "No"),
]
REPLIES = {
    "e1a": "ＹＥＳ",  # right (full-width)
    "e1b": "No.",  # right → image 1 fully right
    "e2a": "Yes, but it is small.",  # right
    "e2b": "Yes",  # wrong → image 2 not fully right
    "o3a": "",  # empty: unparsed, wrong
    "o3b": "The text does not say that.",  # no: right
    "c4b": "No",  # right; c4a is missing
}


def test_lenient_scores_match_hand_count(write_jsonl):
    questions = write_jsonl("q.jsonl", QUESTIONS)
    answers = write_jsonl("a.jsonl", [{"question_id": k, "text": v} for k, v in REPLIES.items()])
    result = score_mme(questions, answers, protocol="lenient")
    existence = result["subtasks"]["existence"]
    assert (existence["acc"], existence["acc_plus"], existence["score"]) == (75.0, 50.0, 125.0)
    assert result["subtasks"]["OCR"]["score"] == 50.0  # acc 50 + acc+ 0
    assert result["subtasks"]["code_reasoning"]["score"] == 50.0
    assert result["metrics"] == {
        "perception": 175.0,
        "cognition": 50.0,
        "existence": 125.0,
        "OCR": 50.0,
        "code_reasoning": 50.0,
    }
    assert "count" in result["absent_subtasks"] and not result["unknown_subtasks"]
    assert (result["n_unparsed"], result["n_missing"]) == (1, 1)


def test_official_scores_match_hand_count(write_jsonl):
    questions = write_jsonl("q.jsonl", QUESTIONS)
    answers = write_jsonl("a.jsonl", [{"question_id": k, "text": v} for k, v in REPLIES.items()])
    result = score_mme(questions, answers)
    assert result["protocol"] == "official"
    # full-width "ＹＥＳ" and "The text does not..." are "other" (wrong) for calculation.py
    predictions = {i["question_id"]: i["prediction"] for i in result["items"]}
    assert predictions == {
        "e1a": None,
        "e1b": "no",
        "e2a": "yes",
        "e2b": "yes",
        "o3a": None,
        "o3b": None,
        "c4a": None,
        "c4b": "no",
    }
    assert result["metrics"] == {
        "perception": 50.0,
        "cognition": 50.0,
        "existence": 50.0,
        "OCR": 0.0,
        "code_reasoning": 50.0,
    }
    assert result["n_unparsed"] == 3


def test_mme_result_layout_scores_as_it_is(tmp_path):
    results = tmp_path / "answers" / "my-model"
    results.mkdir(parents=True)
    (results / "OCR.txt").write_text(
        "1.jpg\tIs it STOP?\tYes\tYes, it says STOP.\n"
        "1.jpg\tIs it GO?\tNo\tNo\n"
        "2.jpg\tIs it A?\tYes\tI cannot tell.\n"
        "2.jpg\tIs it B?\tNo\tNo\n"
    )
    result = score_mme_results([results])
    assert result["subtasks"]["OCR"] == {
        "acc": 75.0,
        "acc_plus": 50.0,
        "score": 125.0,
        "n_questions": 4,
        "n_images": 2,
    }
    assert (result["model_id"], result["metrics"]["perception"]) == ("my-model", 125.0)
    renamed = tmp_path / "OCR_run.txt"
    renamed.write_text((results / "OCR.txt").read_text())
    with pytest.raises(ValueError, match="'OCR_run' is not an MME subtask; name the subtask"):
        score_mme_results([renamed])
    assert score_mme_results([renamed], subtask="OCR")["metrics"]["OCR"] == 125.0
    renamed.write_text("1.jpg\tIs it?\tYes\n")
    with pytest.raises(ValueError, match=r"OCR_run.txt:1: expected 4 tab-separated fields"):
        score_mme_results([renamed], subtask="OCR")


def test_ground_truth_must_be_yes_or_no(write_jsonl):
    questions = write_jsonl("q.jsonl", [_q("x", "color", "i.jpg", "maybe")])
    with pytest.raises(ValueError, match=r"question 'x': field 'answer' must be 'yes' or 'no'"):
        score_mme(questions, write_jsonl("a.jsonl", []))


def test_prepare_reads_both_release_layouts(tmp_path):
    root = tmp_path / "MME_Benchmark_release_version"
    (root / "artwork" / "images").mkdir(parents=True)
    (root / "artwork" / "questions_answers_YN").mkdir()
    (root / "artwork" / "images" / "10002.jpg").write_bytes(b"jpg")
    (root / "artwork" / "questions_answers_YN" / "10002.txt").write_text(
        "Is this a Monet? Please answer yes or no.\tYes\n"
        "Is this a Dali? Please answer yes or no.\tNo\n"
    )
    (root / "OCR").mkdir()
    (root / "OCR" / "0001.png").write_bytes(b"png")
    (root / "OCR" / "0001.txt").write_text("Does it say STOP?\tNo\nDoes it say GO?\tYes\n")
    records = prepare_questions(root, instruction="")
    assert [r["question_id"] for r in records] == [
        "OCR/0001/0",
        "OCR/0001/1",
        "artwork/10002/0",
        "artwork/10002/1",
    ]
    assert records[2] == {
        "question_id": "artwork/10002/0",
        "image": "artwork/images/10002.jpg",
        "text": "Is this a Monet? Please answer yes or no.",
        "category": "artwork",
        "answer": "Yes",
    }
    assert prepare_questions(root)[0]["text"] == (
        "Does it say STOP?\nAnswer the question using a single word or phrase."
    )
    (root / "OCR" / "0002.txt").write_text("Broken line without a tab\n")
    with pytest.raises(FileNotFoundError, match="no image named 0002"):
        prepare_questions(root)
    (root / "OCR" / "0002.jpg").write_bytes(b"jpg")
    with pytest.raises(ValueError, match=r"0002.txt:1: expected 'question<TAB>Yes'"):
        prepare_questions(root)
