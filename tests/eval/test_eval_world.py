"""The synthetic world's benchmark, scored by the world's own `score_answer`."""

from __future__ import annotations

import json

import pytest

from llavakit.eval.tasks.world import score_world

QUESTIONS = [
    {"question_id": "w1", "category": "existence", "answer": "yes"},
    {"question_id": "w2", "category": "colour", "answer": "red"},
    {"question_id": "w3", "category": "counting", "answer": "3"},
    {"question_id": "w4", "category": "position", "answer": "left"},
    {"question_id": "w5", "category": "reading", "answer": "OPEN"},
    {"question_id": "w6", "category": "detail", "answer": ["red circle", "blue star"]},
    {"question_id": "w7", "category": "counting", "answer": "2"},
]
REPLIES = {
    "w1": "Yes, there is.",  # 1
    "w2": "It is blue.",  # 0
    "w3": "There are three stars.",  # 1
    "w4": "",  # 0: empty
    "w5": "The sign says open.",  # 1
    "w6": "A red circle next to a green square.",  # 1 of 2 objects mentioned: 0.5
}  # w7 missing: 0


def test_world_scores_by_category(write_jsonl):
    questions = write_jsonl("q.jsonl", [q | {"image": "x.png", "text": "?"} for q in QUESTIONS])
    answers = write_jsonl("a.jsonl", [{"question_id": k, "text": v} for k, v in REPLIES.items()])
    result = score_world(questions, answers)
    assert result["metrics"] == pytest.approx(
        {
            "accuracy": 100 * 3.5 / 7,
            "existence": 100.0,
            "colour": 0.0,
            "counting": 50.0,
            "position": 0.0,
            "reading": 100.0,
            "detail": 50.0,
        }
    )
    assert list(result["metrics"])[1:] == [
        "existence",
        "colour",
        "counting",
        "position",
        "reading",
        "detail",
    ]
    assert result["n_questions_by_category"]["counting"] == 2
    assert result["missing_ids"] == ["w7"]


def test_score_answer_out_of_range_is_an_error(write_jsonl):
    questions = write_jsonl("q.jsonl", QUESTIONS[:1])
    answers = write_jsonl("a.jsonl", [{"question_id": "w1", "text": "yes"}])
    with pytest.raises(
        ValueError, match=r"gave 2.0 for question 'w1'; expected a value in \[0, 1\]"
    ):
        score_world(questions, answers, score_answer=lambda category, answer, prediction: 2)


def test_a_generated_world_benchmark_scores_and_reports(tmp_path, write_jsonl, capsys):
    """The world's own question file through `eval score world` and `eval report`: a model
    repeating the ground truth scores 100 everywhere; one always saying "yes" scores the share
    of yes questions on existence and 0 on the rest."""
    from llavakit.cli import main
    from llavakit.eval.files import read_records
    from llavakit.world.benchmark import write_benchmark
    from llavakit.world.generate import generate_world

    generate_world(
        tmp_path / "world", n_scenes=8, n_text_images=4, eval_fraction=0.5, progress=False
    )
    questions = tmp_path / "bench.jsonl"
    write_benchmark(tmp_path / "world", questions)
    records = read_records(questions)

    def oracle(answer):
        return "I can see " + ", ".join(answer) + "." if isinstance(answer, list) else answer

    paths = {
        "oracle": write_jsonl(
            "oracle.jsonl",
            [
                {"question_id": r["question_id"], "text": oracle(r["answer"]), "model_id": "oracle"}
                for r in records
            ],
        ),
        "yes": write_jsonl(
            "yes.jsonl",
            [
                {"question_id": r["question_id"], "text": "Yes.", "model_id": "yes-man"}
                for r in records
            ],
        ),
    }
    for name, answers in paths.items():
        code = main(
            [
                "eval",
                "score",
                "world",
                "--questions",
                str(questions),
                "--answers",
                str(answers),
                "--out",
                str(tmp_path / f"{name}.json"),
            ]
        )
        assert code == 0
    oracle_result = json.loads((tmp_path / "oracle.json").read_text())
    assert set(oracle_result["metrics"].values()) == {100.0}
    assert {"existence", "counting", "detail", "reading"} <= set(oracle_result["metrics"])
    yes_result = json.loads((tmp_path / "yes.json").read_text())
    existence = [r for r in records if r["category"] == "existence"]
    share_yes = sum(r["answer"] == "yes" for r in existence) / len(existence)
    assert yes_result["metrics"]["existence"] == pytest.approx(100 * share_yes)
    assert yes_result["metrics"]["counting"] == 0.0 and yes_result["metrics"]["detail"] == 0.0

    assert (
        main(
            [
                "eval",
                "report",
                str(tmp_path / "oracle.json"),
                str(tmp_path / "yes.json"),
                "--out",
                str(tmp_path / "report"),
            ]
        )
        == 0
    )
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## World" in report and "| oracle | 100.00 |" in report and "| yes-man |" in report
