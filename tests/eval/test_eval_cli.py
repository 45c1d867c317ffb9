"""`llavakit eval prepare|score|report` end to end through the command line."""

from __future__ import annotations

import json
import socket

import pytest
from fake_openai import FakeOpenAIServer

from llavakit.cli import main


@pytest.fixture
def pope_files(write_jsonl):
    questions = write_jsonl(
        "pope_q.jsonl", [{"question_id": i, "label": "yes" if i < 2 else "no"} for i in range(4)]
    )
    answers = write_jsonl(
        "pope_a.jsonl",
        [
            {"question_id": i, "text": t, "model_id": "tiny"}
            for i, t in enumerate(["Yes", "No", "No"])
        ],
    )
    return questions, answers


def test_score_writes_results_and_warns_about_missing(pope_files, capsys):
    questions, answers = pope_files
    assert (
        main(["eval", "score", "pope", "--questions", str(questions), "--answers", str(answers)])
        == 0
    )
    out = capsys.readouterr().out
    assert "POPE (tiny):" in out and "accuracy 50.00" in out and "notes: 1/4 missing" in out
    assert "protocol official: haotian-liu/LLaVA llava/eval/eval_pope.py" in out
    results = json.loads((answers.parent / "pope_a.results.json").read_text())
    assert results["task"] == "pope" and results["metrics"]["precision"] == 100.0


def test_mismatched_files_exit_2_with_a_clear_message(pope_files, write_jsonl, capsys):
    questions, _ = pope_files
    stray = write_jsonl("stray.jsonl", [{"question_id": 99, "text": "yes"}])
    code = main(["eval", "score", "pope", "--questions", str(questions), "--answers", str(stray)])
    assert code == 2
    assert "1 answers have question ids that are not in" in capsys.readouterr().err


def test_prepare_score_and_report_scienceqa(tmp_path, write_jsonl, capsys):
    problems = {
        str(i): {
            "question": f"Q{i}?",
            "choices": ["a", "b"],
            "answer": i % 2,
            "hint": "",
            "image": None,
            "subject": "social science",
            "grade": "grade2",
        }
        for i in range(4)
    }
    (tmp_path / "problems.json").write_text(json.dumps(problems))
    (tmp_path / "pid_splits.json").write_text(json.dumps({"test": ["0", "1", "2", "3"]}))
    questions = tmp_path / "sqa.jsonl"
    assert (
        main(
            [
                "eval",
                "prepare",
                "scienceqa",
                "--problems",
                str(tmp_path / "problems.json"),
                "--splits",
                str(tmp_path / "pid_splits.json"),
                "--out",
                str(questions),
            ]
        )
        == 0
    )
    assert len(questions.read_text().splitlines()) == 4
    answers = write_jsonl(
        "sqa_a.jsonl", [{"question_id": str(i), "text": "A", "model_id": "m"} for i in range(4)]
    )
    results = tmp_path / "runs" / "sqa.json"
    assert (
        main(
            [
                "eval",
                "score",
                "scienceqa",
                "--questions",
                str(questions),
                "--answers",
                str(answers),
                "--out",
                str(results),
            ]
        )
        == 0
    )
    assert json.loads(results.read_text())["metrics"]["accuracy"] == 50.0
    assert main(["eval", "report", str(results), "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "| m | 50.00 |" in out and "| *LLaVA (published)* | 90.92 |" in out
    assert (tmp_path / "report" / "report.png").stat().st_size > 1000


@pytest.fixture
def bench_files(write_jsonl):
    return [
        write_jsonl(
            "q.jsonl",
            [
                {
                    "question_id": 1,
                    "image": "1.jpg",
                    "text": "Colour?",
                    "category": "conv",
                    "context": "A red bus.",
                }
            ],
        ),
        write_jsonl("a.jsonl", [{"question_id": 1, "text": "Red.", "model_id": "tiny"}]),
        write_jsonl("ref.jsonl", [{"question_id": 1, "text": "The bus is red."}]),
    ]


def test_llava_bench_judge_through_the_openai_teacher(bench_files, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    questions, answers, references = bench_files
    replies = iter(["Assistant 2 is terse.", "8 6\nshort but right"])
    with FakeOpenAIServer(respond=lambda body: next(replies)) as server:
        code = main(
            [
                "eval",
                "score",
                "llava_bench",
                "--questions",
                str(questions),
                "--answers",
                str(answers),
                "--references",
                str(references),
                "--base-url",
                server.base_url,
                "--teacher-model",
                "judge",
                "--attempts",
                "2",
                "--out",
                str(tmp_path / "bench.json"),
            ]
        )
    assert code == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["metrics"]["overall"] == pytest.approx(75.0) and result["judge"] == "judge"
    assert (result["protocol"], result["n_retried"], result["n_failed"]) == ("official", 1, 0)
    assert (tmp_path / "bench.cache.sqlite").is_file()
    assert "notes: judge judge; 1 reviews retried" in capsys.readouterr().out


def test_judge_errors_are_command_errors(bench_files, capsys, monkeypatch):
    questions, answers, references = bench_files
    monkeypatch.delenv("OPENAI_MODEL", raising=False)
    base = [
        "eval",
        "score",
        "llava_bench",
        "--questions",
        str(questions),
        "--answers",
        str(answers),
        "--references",
        str(references),
    ]
    assert main(base) == 2
    assert "--teacher-model is required" in capsys.readouterr().err
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert (
        main([*base, "--teacher-model", "judge", "--base-url", f"http://127.0.0.1:{port}/v1"]) == 2
    )
    assert "cannot reach the teacher endpoint" in capsys.readouterr().err


def test_scienceqa_ensemble_through_the_openai_teacher(tmp_path, write_jsonl, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    questions = write_jsonl(
        "q.jsonl",
        [
            {
                "question_id": i,
                "question": f"Q{i}?",
                "choices": ["x", "y", "z"],
                "answer": 1,
                "subject": "natural science",
                "grade": "grade1",
            }
            for i in range(3)
        ],
    )
    answers = write_jsonl(
        "a.jsonl", [{"question_id": i, "text": t} for i, t in enumerate(["B", "A", "no idea"])]
    )

    def respond(body):
        if "disagree" in body["messages"][0]["content"]:
            return "The answer is B."  # the arbiter sides with the right option
        return "Hmm." if body.get("seed") == 0 else "The answer is B."  # one retry each

    with FakeOpenAIServer(respond=respond) as server:
        code = main(
            [
                "eval",
                "score",
                "scienceqa",
                "--questions",
                str(questions),
                "--answers",
                str(answers),
                "--ensemble",
                "--base-url",
                server.base_url,
                "--teacher-model",
                "t",
                "--out",
                str(tmp_path / "sqa.json"),
            ]
        )
    assert code == 0
    result = json.loads((tmp_path / "sqa.json").read_text())
    assert result["metrics"]["accuracy"] == pytest.approx(100 / 3)
    variant = result["variants"]["+ t arbitration"]
    assert variant["metrics"]["accuracy"] == 100.0
    assert variant["counts"] == {
        "agreed": 1,
        "arbitrated": 1,
        "arbiter_chose_teacher": 1,
        "teacher_only": 1,
    }
    assert (
        "+ t arbitration (protocol official + t arbitration): accuracy 100.00"
        in capsys.readouterr().out
    )


def test_score_released_layouts_without_a_question_file(tmp_path, capsys):
    released = tmp_path / "textVQA.json"
    released.write_text(
        json.dumps([{"question": "Brand?", "answer": "It is Sony.", "gt_answers": ["sony"] * 10}])
    )
    base = ["eval", "score", "textvqa", "--answers", str(released)]
    assert main([*base, "--protocol", "multimodalocr"]) == 0
    assert "accuracy 100.00" in capsys.readouterr().out
    assert json.loads((tmp_path / "textVQA.results.json").read_text())["protocol"] == (
        "multimodalocr"
    )
    assert main(base) == 0  # official for TextVQA: llava15, which needs an exact answer
    assert "protocol llava15" in capsys.readouterr().out
    assert main([*base, "--protocol", "exact"]) == 2
    assert "TextVQA has no scoring protocol 'exact'" in capsys.readouterr().err

    ocr = tmp_path / "OCR_model.txt"
    ocr.write_text("1.jpg\tSTOP?\tYes\tYes\n1.jpg\tGO?\tNo\tNo, it says STOP\n")
    assert main(["eval", "score", "mme", "--results", str(ocr), "--subtask", "OCR"]) == 0
    assert "OCR 200.00" in capsys.readouterr().out
    assert json.loads((tmp_path / "OCR_model.results.json").read_text())["model_id"] == "OCR_model"
    assert main(["eval", "score", "mme", "--results", str(ocr)]) == 2
    assert "'OCR_model' is not an MME subtask" in capsys.readouterr().err


def test_prepare_pope_and_textvqa(tmp_path, capsys):
    coco = tmp_path / "coco"
    coco.mkdir()
    (coco / "coco_pope_random.json").write_text(
        json.dumps({"question_id": 1, "image": "a.jpg", "text": "Is there a dog?", "label": "no"})
        + "\n"
    )
    out = tmp_path / "pope.jsonl"
    assert main(["eval", "prepare", "pope", "--annotation-dir", str(coco), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["text"].endswith("using a single word or phrase.")
    annotations = tmp_path / "TextVQA_0.5.1_val.json"
    annotations.write_text(
        json.dumps(
            {
                "data": [
                    {"question_id": 5, "image_id": "i", "question": "what?"}
                    | {"answers": ["a"] * 10}
                ]
            }
        )
    )
    out = tmp_path / "tvqa.jsonl"
    args = ["eval", "prepare", "textvqa", "--annotations", str(annotations), "--out", str(out)]
    assert main([*args, "--protocol", "multimodalocr"]) == 0
    assert json.loads(out.read_text())["text"] == "what?"
    assert "1 questions" in capsys.readouterr().out
