"""The whole demo pipeline at smoke sizes: every step runs, the report is sane, reruns reuse."""

from __future__ import annotations

import json

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
    for name in ("report.md", "accuracy.png", "loss_curves.png"):
        assert (tmp_path / name).stat().st_size > 0
    model, processor = llavakit.load(tmp_path / "model")
    assert processor.template.name == "vicuna_v1"

    logged.clear()
    again = run_demo(tmp_path, SMOKE, log=logged.append)
    assert again["accuracy"] == report["accuracy"]
    assert all("reused" in line for line in logged if line.startswith("[")), logged
