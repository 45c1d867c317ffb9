"""The demo's report.md: its tables stay well formed whatever optional parts the run had."""

from __future__ import annotations

from llavakit.demo.report import markdown


def _report(**extra):
    return {
        "accuracy": {"existence": 0.5, "reading": 0.0},
        "accuracy_stage1": {"existence": 0.25, "reading": 0.0},
        "n_questions": {"existence": 4, "reading": 2},
        "seconds": {"stage2": 10.0},
        "total_seconds": 10.0,
        "data": {"instruct": 3},
        "chat": [{"image": "a.png", "question": "Q?", "answer": "A."}],
        "checkpoint": "model",
        **extra,
    }


def _table_rows(text: str, first_cell: str) -> list[list[str]]:
    """The cells of the Markdown table whose header starts with `first_cell`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_cell} |"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_accuracy_table_has_one_cell_per_column_with_and_without_the_ablation():
    ablation = {"ablation": {"accuracy_without_llavar": {"existence": 0.75, "reading": 0.0}}}
    for extra, columns in (({}, 6), (ablation, 7)):
        rows = _table_rows(markdown(_report(**extra)), "category")
        assert [len(row) for row in rows] == [columns] * 4, rows
    assert rows[0][-1] == "final without LLaVAR data" and rows[2][-1] == "0.75"


def test_curve_section_lists_every_point_in_demo_minutes():
    curve = [
        {"demo_seconds": 90.0, "step": 5, "accuracy": {"existence": 0.5, "reading": 0.0}},
        {"demo_seconds": 150.0, "step": 9, "accuracy": {"existence": 0.75, "reading": 0.5}},
    ]
    rows = _table_rows(markdown(_report(curve=curve)), "demo minutes")
    assert rows[2:] == [["1.5", "5", "0.50", "0.00"], ["2.5", "9", "0.75", "0.50"]]
    assert "Accuracy against time" not in markdown(_report())


def test_stage0_section_says_where_the_models_came_from():
    llm = {"steps": 40, "benchmark_in_words": {"existence": 0.5}}
    clip = {"steps": 30, "region_accuracy": {"shape": 0.25}}
    shipped = {"source": "llavakit/demo/stand_ins", "built": "2026-12-02", "build_minutes": 40}
    text = markdown(_report(stage0=shipped | {"llm": llm, "clip": clip}))
    assert "stand-ins from `llavakit/demo/stand_ins`" in text and "existence 0.50" in text
    assert "shape 0.25" in text and "40 steps" in text
    assert "Trained inside this run" in markdown(_report(stage0={"llm": llm, "clip": clip}))
    assert "## Stage 0" not in markdown(_report())
