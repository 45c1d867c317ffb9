"""ScienceQA: prompts, both letter readers, accuracy breakdown by hand, the teacher ensemble.

The official reader's decisions on 40 crafted replies are in test_eval_crafted.py."""

from __future__ import annotations

import json

import pytest

from llavakit.eval.tasks.scienceqa import (
    build_prompt,
    extract_letter,
    official_letter,
    prepare_from_llava,
    prepare_questions,
    score_scienceqa,
)
from llavakit.eval.tasks.scienceqa_ensemble import EnsembleConfig

CHOICES = ["rock", "apple", "pear", "fig"]


def test_prompt_has_context_question_lettered_options_and_instruction():
    assert build_prompt("Which is a fruit?", ["rock", "apple"], hint="Look closely.") == (
        "Context: Look closely.\nWhich is a fruit?\nA. rock\nB. apple\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert build_prompt("Q?", ["x", "y"], hint="  ", instruction="") == "Q?\nA. x\nB. y"
    with pytest.raises(ValueError, match="2 to 26 choices"):
        build_prompt("Q?", ["only"])


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("The answer is B.", "B"),
        ("B", "B"),
        ("(B)", "B"),
        ("b", "B"),
        ("B.", "B"),
        ("B. apple", "B"),
        ("B) apple", "B"),
        ("(C) pear", "C"),
        ("Answer: (D)", "D"),
        ("apple.", "B"),
        ("Ｂ", "B"),  # full-width letter, NFKC-normalised
        ("B or C", "B"),  # several letters, none explicit: the first standalone one
        ("Both A and C look wrong; the answer is D.", "D"),  # explicit beats standalone
        ("The answer is A. On reflection, the answer is C.", "C"),  # several explicit: last
        ("I think it is C", "C"),  # "I" is not an option with 4 choices
        ("A is correct", "A"),
        ("A dog is not a fruit.", None),  # "A" as the article
        ("E", None),  # not an option
        ("The answer is E.", None),
        ("", None),
        ("   ", None),
        ("Je ne sais pas", None),
    ],
)
def test_extract_letter(reply, expected):
    assert extract_letter(reply, CHOICES) == expected


def _problem(qid, subject, grade, answer, hint="", image=None):
    record = {
        "question_id": qid,
        "question": f"Question {qid}?",
        "choices": CHOICES,
        "answer": answer,
        "hint": hint,
        "subject": subject,
        "grade": grade,
    }
    return record | ({"image": image} if image else {})


QUESTIONS = [
    _problem("q1", "natural science", "grade3", 1, image="q1/image.png"),  # NAT IMG G1-6, B
    _problem("q2", "social science", "grade8", "A", hint="A map."),  # SOC TXT G7-12
    _problem("q3", "language science", "grade2", 2),  # LAN NO G1-6, C
    _problem("q4", "natural science", "grade10", 3, "Some text.", "q4/image.png"),  # TXT+IMG, D
    _problem("q5", "social science", "grade12", 1),  # SOC NO G7-12, B
    _problem("q6", "natural science", "grade5", 0, hint="Hint."),  # NAT TXT G1-6, A
]
REPLIES = {
    "q1": "The answer is B.",  # right
    "q2": "A",  # right
    "q3": "B or C",  # B: wrong
    "q4": "",  # empty: wrong, unparsed
    "q6": "(A) rock",  # right; q5 is missing
}


@pytest.fixture
def files(write_jsonl):
    questions = write_jsonl("questions.jsonl", QUESTIONS)
    answers = write_jsonl(
        "answers.jsonl",
        [{"question_id": q, "text": t, "model_id": "tiny-llava"} for q, t in REPLIES.items()],
    )
    return questions, answers


def test_official_is_the_default_and_reads_only_the_reference_layouts(files):
    result = score_scienceqa(*files)
    assert (result["protocol"], result["protocol_reference"]) == (
        "official",
        "haotian-liu/LLaVA llava/eval/eval_science_qa.py",
    )
    predictions = {i["question_id"]: i["prediction"] for i in result["items"]}
    # "B or C", "" and "(A) rock" are FAILED for the reference; q5 has no answer
    assert predictions == {"q1": "B", "q2": "A", "q3": None, "q4": None, "q5": None, "q6": None}
    assert result["metrics"]["accuracy"] == pytest.approx(100 * 2 / 6)
    assert result["metrics"]["IMG"] == pytest.approx(100 * 1 / 2)  # q1 right, q4 wrong
    assert result["n_unparsed"] == 3
    assert official_letter("B") == "B" and official_letter("(B)") is None
    with pytest.raises(ValueError, match="ScienceQA has no scoring protocol 'gpt'"):
        score_scienceqa(*files, protocol="gpt")


def test_lenient_accuracy_breakdown_matches_hand_count(files):
    result = score_scienceqa(*files, protocol="lenient")
    assert result["benchmark"] == "ScienceQA" and result["model_id"] == "tiny-llava"
    assert result["protocol"] == "lenient"
    expected = {
        "accuracy": 3 / 6,
        "NAT": 2 / 3,
        "SOC": 1 / 2,
        "LAN": 0.0,
        "TXT": 2 / 3,
        "IMG": 1 / 2,
        "NO": 0.0,
        "G1-6": 2 / 3,
        "G7-12": 1 / 3,
    }
    assert list(result["metrics"]) == list(expected)
    assert result["metrics"] == pytest.approx({k: 100 * v for k, v in expected.items()})
    assert (result["n_missing"], result["missing_ids"], result["n_unparsed"]) == (1, ["q5"], 1)
    predictions = {i["question_id"]: i["prediction"] for i in result["items"]}
    assert predictions == {"q1": "B", "q2": "A", "q3": "B", "q4": None, "q5": None, "q6": "A"}


def test_bad_ground_truth_is_reported_with_its_question(write_jsonl):
    no_answers = write_jsonl("none.jsonl", [])
    bad = write_jsonl("bad.jsonl", [_problem("q1", "natural science", "grade3", 7)])
    with pytest.raises(ValueError, match=r"bad.jsonl: question 'q1': answer index 7 is outside"):
        score_scienceqa(bad, no_answers)
    bad = write_jsonl("bad2.jsonl", [_problem("q1", "biology", "grade3", 1)])
    with pytest.raises(ValueError, match=r"subject 'biology' is not one of"):
        score_scienceqa(bad, no_answers)
    bad = write_jsonl("bad3.jsonl", [_problem("q1", "natural science", "year 3", "AB")])
    with pytest.raises(ValueError, match=r"answer 'AB' is not one of the option letters ABCD"):
        score_scienceqa(bad, no_answers)


TEACHER_ANSWERS = {  # the text-only teacher's own answers
    "q1": "It must be B.",  # agrees with the model
    "q2": "The answer is C.",  # disagrees → arbitration keeps the model's A (right)
    "q3": "C",  # disagrees → arbitration never parses → model's B stands (wrong)
    "q4": "The answer is D.",  # model has no letter → teacher's D (right)
    "q5": "B",  # model missing → teacher's B (right)
    "q6": "B",  # disagrees → arbitration picks the teacher's B (wrong)
}
ARBITRATIONS = {"q2": "The answer is A.", "q3": "Both seem plausible.", "q6": "The answer is B."}


def _teacher_reply(request):
    question_id = request.key.split(":")[1]
    if request.task == "scienceqa_answer":
        return TEACHER_ANSWERS[question_id]
    return ARBITRATIONS[question_id]


def test_ensemble_with_text_only_teacher(files, scripted_teacher):
    teacher = scripted_teacher(_teacher_reply, name="gpt-judge")
    result = score_scienceqa(
        *files, protocol="lenient", teacher=teacher, ensemble_config=EnsembleConfig(seed=5)
    )
    variant = result["variants"]["+ gpt-judge arbitration"]
    assert variant["protocol"] == "lenient + gpt-judge arbitration"
    assert variant["metrics"]["accuracy"] == pytest.approx(100 * 4 / 6)
    assert variant["metrics"]["NAT"] == pytest.approx(100 * 2 / 3)  # q1, q4 right; q6 wrong
    assert variant["counts"] == {
        "agreed": 1,
        "arbitrated": 2,
        "arbiter_chose_model": 1,
        "arbiter_chose_teacher": 1,
        "arbitration_failed": 1,
        "teacher_only": 2,
    }
    assert result["metrics"]["accuracy"] == pytest.approx(50.0)  # the model alone is unchanged
    final = {i["question_id"]: i["ensemble_prediction"] for i in result["items"]}
    assert final == {"q1": "B", "q2": "A", "q3": "B", "q4": "D", "q5": "B", "q6": "B"}

    answer_request = teacher.asked("scienceqa:q2:answer")[0]
    assert "Context: A map.\nQuestion q2?\nA. rock" in answer_request.messages[-1]["content"]
    assert "Answer with the option" not in answer_request.messages[-1]["content"]
    arbitration = teacher.asked("scienceqa:q2:arbitrate")
    assert len(arbitration) == 1
    assert "saw the image):\nA\n" in arbitration[0].messages[-1]["content"]
    assert (
        arbitration[0].messages[-1]["content"].endswith("did not see the image):\nThe answer is C.")
    )
    # the unparsable arbitration was asked three times, each with a new seed
    assert [r.params["seed"] for r in teacher.asked("scienceqa:q3:arbitrate")] == [5, 6, 7]
    assert not teacher.asked("scienceqa:q1:arbitrate") and not teacher.asked(
        "scienceqa:q4:arbitrate"
    )


FRUIT = {
    "question": "Which is a fruit?",
    "choices": ["rock", "apple"],
    "answer": 1,
    "hint": "",
    "image": "image.png",
    "subject": "natural science",
    "grade": "grade4",
}
"""Problem 7 of a small problems.json."""


def test_prepare_from_the_scienceqa_release(tmp_path):
    problems = {
        "7": FRUIT,
        "9": {
            "question": "Which word is a noun?",
            "choices": ["run", "cat", "blue"],
            "answer": 1,
            "hint": "Read the words.",
            "image": None,
            "subject": "language science",
            "grade": "grade9",
        },
    }
    (tmp_path / "problems.json").write_text(json.dumps(problems))
    (tmp_path / "pid_splits.json").write_text(json.dumps({"train": ["9"], "test": ["7", "9"]}))
    records = prepare_questions(tmp_path / "problems.json", tmp_path / "pid_splits.json", "test")
    assert [r["question_id"] for r in records] == ["7", "9"]
    assert records[0]["image"] == "7/image.png" and "image" not in records[1]
    assert records[1]["text"] == (
        "Context: Read the words.\nWhich word is a noun?\nA. run\nB. cat\nC. blue\n"
        "Answer with the option's letter from the given choices directly."
    )
    with pytest.raises(ValueError, match=r"no split 'val'; it has \['test', 'train'\]"):
        prepare_questions(tmp_path / "problems.json", tmp_path / "pid_splits.json", "val")


def test_prepare_from_llavas_own_prompts(tmp_path, write_jsonl):
    problems = {"7": FRUIT}
    (tmp_path / "problems.json").write_text(json.dumps(problems))
    llava = tmp_path / "llava_test_CQM-A.json"
    turn = "Which is a fruit?\nA. rock\nB. apple\n<image>"
    llava.write_text(
        json.dumps(
            [
                {
                    "id": "7",
                    "image": "7/image.png",
                    "conversations": [
                        {"from": "human", "value": turn},
                        {"from": "gpt", "value": "B"},
                    ],
                }
            ]
        )
    )
    (record,) = prepare_from_llava(llava, tmp_path / "problems.json")
    assert record["text"] == (
        "Which is a fruit?\nA. rock\nB. apple\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert (record["question_id"], record["image"], record["answer"]) == ("7", "7/image.png", 1)
    answers = write_jsonl("a.jsonl", [{"question_id": "7", "text": "B", "prompt": record["text"]}])
    questions = write_jsonl("q.jsonl", [record])
    assert score_scienceqa(questions, answers)["metrics"]["IMG"] == 100.0
    llava.write_text(json.dumps([{"id": "8", "conversations": []}]))
    with pytest.raises(ValueError, match="record 1 is not a LLaVA question record"):
        prepare_from_llava(llava, tmp_path / "problems.json")
