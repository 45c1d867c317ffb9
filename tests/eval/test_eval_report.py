"""Reports: Markdown tables per benchmark with the papers' numbers, and the bar chart."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from llavakit.eval.report import build_tables, markdown, write_report


def _result(path, benchmark, metrics, **extra):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": benchmark, "metrics": metrics, **extra}))
    return path


def test_tables_group_by_benchmark_and_add_published_rows(tmp_path):
    paths = [
        _result(
            tmp_path / "a" / "sqa.json",
            "ScienceQA",
            {"accuracy": 81.5, "NAT": 80.0},
            model_id="tiny",
            n_missing=2,
            n_questions=10,
            n_unparsed=1,
            variants={"+ gpt arbitration": {"metrics": {"accuracy": 85.0, "NAT": 90.0}}},
        ),
        _result(
            tmp_path / "b" / "sqa.json",
            "ScienceQA",
            {"accuracy": 70.0, "NAT": None},
            model_id="tiny",
        ),
        _result(tmp_path / "run7" / "tvqa.json", "TextVQA", {"accuracy": 12.25}),
        _result(
            tmp_path / "w.json", "World", {"accuracy": 90.0, "existence": 100.0}, model_id="demo"
        ),
    ]
    tables = build_tables(paths)
    assert [t.benchmark for t in tables] == ["ScienceQA", "TextVQA", "World"]
    sqa = tables[0]
    assert [r.label for r in sqa.rows] == [
        "tiny",
        "tiny + gpt arbitration",
        f"tiny [{paths[1]}]",  # same name twice: told apart by the file
        "LLaVA",
        "LLaVA + GPT-4 (judge)",
        "LLaVAR",
    ]
    assert sqa.rows[0].notes == "2/10 missing; 1 unparsed"
    assert tables[1].rows[0].label == "run7"
    assert [r.metrics["accuracy"] for r in tables[1].rows if r.published] == [
        31.0,
        39.5,
        36.7,
        48.5,
        52.1,
    ]
    assert not any(r.published for r in tables[2].rows)

    text = markdown(tables)
    assert "## ScienceQA\n\n| run | accuracy | NAT | notes |\n|---|---:|---:|---|" in text
    assert "| tiny | 81.50 | 80.00 | 2/10 missing; 1 unparsed |" in text
    assert f"| tiny [{paths[1]}] | 70.00 | – |  |" in text
    assert "| *LLaVA + GPT-4 (judge) (published)* | 92.53 | – | LLaVA paper |" in text
    assert "| *LLaVAR + high-res 896px (published)* | 52.10 | – |" not in text  # one column only
    assert "| *LLaVAR + high-res 896px (published)* | 52.10 | LLaVAR paper |" in text

    without = build_tables(paths, include_published=False)
    assert not any(r.published for t in without for r in t.rows)


def test_write_report_writes_markdown_chart_and_data(tmp_path):
    paths = [
        _result(
            tmp_path / "r1.json",
            "LLaVA-Bench",
            {"overall": 60.0, "conversation": 70.0},
            model_id="m",
        ),
        _result(
            tmp_path / "r2.json",
            "MME",
            {"perception": 900.0, "cognition": 200.0, "OCR": 65.0},
            model_id="m",
        ),
    ]
    written = write_report(paths, tmp_path / "report")
    text = written["markdown"].read_text()
    assert "| *LLaVA (published)* | 85.10 | – | LLaVA paper |" in text
    assert "| *LLaVAR (approx.) (published)* | – | – | 80.00 | LLaVAR paper |" in text
    with Image.open(written["chart"]) as chart:
        assert chart.format == "PNG" and chart.width > 500 and chart.height > 200
    data = json.loads(written["data"].read_text())
    assert data["MME"][0] == {
        "run": "m",
        "published": False,
        "metrics": {"perception": 900.0, "cognition": 200.0, "OCR": 65.0},
        "notes": "",
    }


def test_bad_results_files(tmp_path):
    with pytest.raises(ValueError, match="no results files"):
        build_tables([])
    (tmp_path / "x.json").write_text(json.dumps({"metrics": {"a": 1}}))
    with pytest.raises(ValueError, match=r"x.json: not a llavakit results file"):
        build_tables([tmp_path / "x.json"])
    (tmp_path / "y.json").write_text(json.dumps({"benchmark": "POPE", "metrics": {}}))
    with pytest.raises(ValueError, match=r"y.json: results file has no 'metrics'"):
        build_tables([tmp_path / "y.json"])
    with pytest.raises(FileNotFoundError, match="z.json"):
        build_tables([tmp_path / "z.json"])
