"""The whole demo pipeline at smoke sizes: every step runs, the report is sane, reruns reuse."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

import llavakit
from llavakit.demo.pipeline import run_demo
from llavakit.demo.sizes import SMOKE

CATEGORIES = {"existence", "colour", "counting", "position", "reading", "detail"}


def test_demo_runs_end_to_end_and_reuses_finished_steps(tmp_path):
    logged: list[str] = []
    report = run_demo(tmp_path, SMOKE, log=logged.append)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["accuracy"] == report["accuracy"]
    assert CATEGORIES <= set(report["accuracy"]) and CATEGORIES <= set(report["accuracy_stage1"])
    assert all(0.0 <= v <= 1.0 for v in report["accuracy"].values())
    assert all(report["n_questions"][c] > 0 for c in CATEGORIES)
    assert {"world", "data", "stage0", "stage1", "stage2", "eval_stage1", "eval_stage2"} <= set(
        report["seconds"]
    )
    assert report["loss"]["stage1"] and report["loss"]["stage2"]
    assert report["data"]["pretrain"] > 0 and report["data"]["instruct"] > 0
    assert report["data"]["noisy"] > 0 and report["data"]["llavar"] > 0
    assert len(report["chat"]) == 3
    _check_curve(tmp_path, report)
    for name in ("report.md", "accuracy.png", "accuracy_curve.png", "loss_curves.png"):
        assert (tmp_path / name).stat().st_size > 0
    model, processor = llavakit.load(tmp_path / "model")
    assert processor.template.name == "vicuna_v1"

    logged.clear()
    again = run_demo(tmp_path, SMOKE, log=logged.append)
    assert again["accuracy"] == report["accuracy"]
    assert all("reused" in line for line in logged if line.startswith("[")), logged
    _check_ablations(tmp_path)

    logged.clear()
    retrained = run_demo(tmp_path, replace(SMOKE, lm_steps=SMOKE.lm_steps + 1), log=logged.append)
    ran = {line.split("]")[0][1:] for line in logged if line.endswith("running ...")}
    assert {"stage0", "stage1", "llavar_conversations", "stage2"} <= ran, logged
    assert not {"world", "data"} & ran, logged  # they do not depend on the language model
    steps = json.loads((tmp_path / "steps.json").read_text())
    assert "0 already done" in steps["llavar_conversations"]["result"]["llavar_report"]
    assert retrained["data"]["llavar"] == report["data"]["llavar"]


def _check_ablations(out):
    """Each ablation adds its column; a finished one is reused when another is asked for."""
    from llavakit.demo.report import ABLATION_COLUMNS

    logged: list[str] = []
    first = run_demo(out, SMOKE, ablation="llavar", log=logged.append)
    assert set(first["ablation"]) == {"accuracy_without_llavar", "interval_without_llavar"}
    logged.clear()
    both = run_demo(out, SMOKE, ablation=["llavar", "highres"], log=logged.append)
    ran = {line.split("]")[0][1:] for line in logged if line.endswith("running ...")}
    assert ran == {"ablation_highres_stage1", "ablation_highres_stage2", "ablation_highres_eval"}
    without = both["ablation"]["accuracy_without_llavar"]
    assert without == first["ablation"]["accuracy_without_llavar"]
    assert set(both["ablation"]["accuracy_with_highres"]) == set(without)
    table = (out / "report.md").read_text()
    assert all(title in table for title in ABLATION_COLUMNS.values())


def _check_curve(out, report):
    """The curve runs along demo time, and its last point is the final model's own score."""
    from llavakit.demo.curve import curve_questions
    from llavakit.world.benchmark import score_answer

    curve = report["curve"]
    trained = json.loads((out / "model" / "config.json").read_text())["metadata"]["steps"]
    assert curve and curve[-1]["step"] == trained
    times = [point["demo_seconds"] for point in curve]
    assert times == sorted(times) and times[0] > report["seconds"]["stage1"]
    questions = [json.loads(line) for line in (out / "eval" / "questions.jsonl").open()]
    subset = curve_questions(questions, SMOKE.curve_per_category)
    answers = {}
    for line in (out / "eval" / "answers_stage2.jsonl").open():
        answer = json.loads(line)
        answers[answer["question_id"]] = answer["text"]
    for category, accuracy in curve[-1]["accuracy"].items():
        scored = [
            score_answer(category, q["answer"], answers[q["question_id"]])
            for q in subset
            if q["category"] == category
        ]
        assert accuracy == pytest.approx(sum(scored) / len(scored)), category
