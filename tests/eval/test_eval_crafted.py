"""Every `official` scorer against hand-worked verdicts on crafted answer files.

`tests/eval/crafted/<benchmark>.jsonl` holds edge cases of our own (punctuation, case, extra
words, number words, empty answers, option text instead of a letter, the right word inside
another word...), each with the verdict the reference implementation reaches, worked out by
hand from its rules and written down with the reason (`why`). Each test builds a question file
and an answer file from the cases, runs the scorer end to end and requires every verdict.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llavakit.eval.tasks.llava_bench import score_llava_bench
from llavakit.eval.tasks.mme import score_mme
from llavakit.eval.tasks.pope import score_pope
from llavakit.eval.tasks.scienceqa import score_scienceqa
from llavakit.eval.tasks.textvqa import score_textvqa

CRAFTED = Path(__file__).parent / "crafted"


def _cases(name: str) -> list[dict]:
    cases = [json.loads(line) for line in (CRAFTED / name).read_text().splitlines()]
    assert len(cases) >= 30, f"{name} needs at least 30 cases"
    return cases


def _answers(write_jsonl, cases: list[dict], field: str = "reply") -> Path:
    return write_jsonl(
        "answers.jsonl",
        [{"question_id": c["id"], "text": c[field]} for c in cases if c[field] is not None],
    )


def _disagreements(cases: list[dict], items: list[dict], same) -> list[str]:
    by_id = {item["question_id"]: item for item in items}
    return [
        f"{c['id']} ({c['why']}): got {by_id[c['id']]}"
        for c in cases
        if not same(c, by_id[c["id"]])
    ]


def test_scienceqa_official(write_jsonl):
    cases = _cases("scienceqa.jsonl")
    questions = write_jsonl(
        "questions.jsonl",
        [
            {
                "question_id": c["id"],
                "question": "Which one?",
                "choices": [f"option {i}" for i in range(c["choices"])],
                "answer": c["answer"],
                "hint": "",
                "subject": "natural science",
                "grade": "grade4",
            }
            for c in cases
        ],
    )
    result = score_scienceqa(questions, _answers(write_jsonl, cases))
    assert result["protocol"] == "official"
    wrong = _disagreements(
        cases,
        result["items"],
        lambda c, i: (i["prediction"], i["correct"]) == (c["parsed"], c["correct"]),
    )
    assert not wrong, "\n".join(wrong)
    right = sum(c["correct"] for c in cases)
    assert result["metrics"]["accuracy"] == pytest.approx(100 * right / len(cases))


def test_textvqa_llava15(write_jsonl):
    cases = _cases("textvqa_llava15.jsonl")
    questions = write_jsonl(
        "questions.jsonl", [{"question_id": c["id"], "answers": c["answers"]} for c in cases]
    )
    result = score_textvqa(questions, _answers(write_jsonl, cases))  # official = llava15
    assert result["protocol"] == "llava15"
    wrong = _disagreements(
        cases, result["items"], lambda c, i: i["score"] == pytest.approx(c["score"])
    )
    assert not wrong, "\n".join(wrong)
    mean = sum(c["score"] for c in cases) / len(cases)
    assert result["metrics"]["accuracy"] == pytest.approx(100 * mean)


def test_text_vqa_multimodalocr(write_jsonl):
    cases = _cases("textvqa_multimodalocr.jsonl")
    questions = write_jsonl(
        "questions.jsonl",
        [
            {"question_id": c["id"], "answers" if isinstance(c["gt"], list) else "answer": c["gt"]}
            for c in cases
        ],
    )
    result = score_textvqa(questions, _answers(write_jsonl, cases), dataset="ST-VQA")
    assert result["protocol"] == "multimodalocr"  # official for ST-VQA
    wrong = _disagreements(cases, result["items"], lambda c, i: i["score"] == c["correct"])
    assert not wrong, "\n".join(wrong)


def test_pope_official(write_jsonl):
    cases = _cases("pope.jsonl")
    questions = write_jsonl(
        "questions.jsonl",
        [{"question_id": c["id"], "label": c["label"], "category": "random"} for c in cases],
    )
    result = score_pope(questions, _answers(write_jsonl, cases))
    wrong = _disagreements(
        cases,
        result["items"],
        lambda c, i: (i["prediction"], i["correct"]) == (c["verdict"], c["verdict"] == c["label"]),
    )
    assert not wrong, "\n".join(wrong)
    true_pos = sum(c["verdict"] == c["label"] == "yes" for c in cases)
    precision = true_pos / sum(c["verdict"] == "yes" for c in cases)
    recall = true_pos / sum(c["label"] == "yes" for c in cases)
    f1 = 100 * 2 * precision * recall / (precision + recall)
    assert result["metrics"]["f1"] == pytest.approx(f1)


def test_mme_official(write_jsonl):
    cases = _cases("mme.jsonl")
    questions = write_jsonl(
        "questions.jsonl",
        [
            {"question_id": c["id"], "image": f"{c['id']}.png", "category": "OCR"}
            | {"answer": c["answer"]}
            for c in cases
        ],
    )
    result = score_mme(questions, _answers(write_jsonl, cases))
    wrong = _disagreements(cases, result["items"], lambda c, i: i["prediction"] == c["verdict"])
    assert not wrong, "\n".join(wrong)
    right = sum(c["verdict"] == c["answer"].lower() for c in cases)
    # one question per image here, so acc+ equals acc
    assert result["metrics"]["OCR"] == pytest.approx(2 * 100 * right / len(cases))


def test_llava_bench_official(write_jsonl, scripted_teacher):
    cases = _cases("llava_bench.jsonl")
    questions = write_jsonl(
        "questions.jsonl",
        [
            {"question_id": c["id"], "image": "1.jpg", "text": "Q?", "category": "conv"}
            | {"context": "A photo."}
            for c in cases
        ],
    )
    answers = write_jsonl("answers.jsonl", [{"question_id": c["id"], "text": "A."} for c in cases])
    references = write_jsonl("refs.jsonl", [{"question_id": c["id"], "text": "R."} for c in cases])
    reviews = {f"llava_bench:{c['id']}": c["review"] for c in cases}
    teacher = scripted_teacher(lambda request: reviews[request.key])
    result = score_llava_bench(questions, answers, references, teacher)
    expected = {c["id"]: tuple(c["scores"] or (-1, -1)) for c in cases}
    by_id = {i["question_id"]: i for i in result["items"]}
    wrong = [
        f"{c['id']} ({c['why']}): got {by_id[c['id']]['reference_score']}, "
        f"{by_id[c['id']]['candidate_score']}"
        for c in cases
        if (by_id[c["id"]]["reference_score"], by_id[c["id"]]["candidate_score"])
        != expected[c["id"]]
    ]
    assert not wrong, "\n".join(wrong)
    assert result["n_failed"] == sum(c["scores"] is None for c in cases)
    total_reference = sum(s[0] for s in expected.values())
    total_candidate = sum(s[1] for s in expected.values())
    assert result["metrics"]["overall"] == pytest.approx(100 * total_candidate / total_reference)
