"""MME: acc, acc+ and score per subtask, perception and cognition totals, by hand."""

from __future__ import annotations

import pytest

from llavakit.eval.tasks.mme import prepare_questions, score_mme


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


def test_scores_match_hand_count(write_jsonl):
    questions = write_jsonl("q.jsonl", QUESTIONS)
    answers = write_jsonl("a.jsonl", [{"question_id": k, "text": v} for k, v in REPLIES.items()])
    result = score_mme(questions, answers)
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


def test_ground_truth_must_be_yes_or_no(write_jsonl):
    questions = write_jsonl("q.jsonl", [_q("x", "color", "i.jpg", "maybe")])
    with pytest.raises(ValueError, match=r"question 'x': field 'answer' must be 'yes' or 'no'"):
        score_mme(questions, write_jsonl("a.jsonl", []))


def test_prepare_reads_both_release_layouts(tmp_path):
    root = tmp_path / "MME_Benchmark_release_version"
    (root / "artwork" / "images").mkdir(parents=True)
    (root / "artwork" / "questions_answers_YES_or_NO").mkdir()
    (root / "artwork" / "images" / "10002.jpg").write_bytes(b"jpg")
    (root / "artwork" / "questions_answers_YES_or_NO" / "10002.txt").write_text(
        "Is this a Monet? Please answer yes or no.\tYes\n"
        "Is this a Dali? Please answer yes or no.\tNo\n"
    )
    (root / "OCR").mkdir()
    (root / "OCR" / "0001.png").write_bytes(b"png")
    (root / "OCR" / "0001.txt").write_text("Does it say STOP?\tNo\nDoes it say GO?\tYes\n")
    records = prepare_questions(root)
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
    (root / "OCR" / "0002.txt").write_text("Broken line without a tab\n")
    with pytest.raises(FileNotFoundError, match="no image named 0002"):
        prepare_questions(root)
    (root / "OCR" / "0002.jpg").write_bytes(b"jpg")
    with pytest.raises(ValueError, match=r"0002.txt:1: expected 'question<TAB>Yes'"):
        prepare_questions(root)
