"""Reports: a Markdown table per benchmark and protocol with the papers' numbers of that
protocol only, and the bar chart."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from llavakit.eval.report import build_tables, markdown, write_report


def _result(path, benchmark, metrics, **extra):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": benchmark, "metrics": metrics, **extra}))
    return path


def test_tables_group_by_benchmark_and_protocol_with_matching_published_rows(tmp_path):
    official = {"protocol": "official", "protocol_reference": "eval_science_qa.py"}
    paths = [
        _result(
            tmp_path / "a" / "sqa.json",
            "ScienceQA",
            {"accuracy": 81.5, "NAT": 80.0},
            model_id="tiny",
            n_missing=2,
            n_questions=10,
            n_unparsed=1,
            variants={
                "+ gpt arbitration": {
                    "metrics": {"accuracy": 85.0, "NAT": 90.0},
                    "protocol": "official + gpt arbitration",
                }
            },
            **official,
        ),
        _result(
            tmp_path / "b" / "sqa.json",
            "ScienceQA",
            {"accuracy": 70.0, "NAT": None},
            model_id="tiny",
            **official,
        ),
        _result(
            tmp_path / "c" / "sqa.json",
            "ScienceQA",
            {"accuracy": 95.0},
            model_id="tiny",
            protocol="lenient",
        ),
        _result(
            tmp_path / "run7" / "tvqa.json", "TextVQA", {"accuracy": 12.25}, protocol="llava15"
        ),
        _result(
            tmp_path / "run8" / "tvqa.json",
            "TextVQA",
            {"accuracy": 40.0},
            protocol="multimodalocr",
        ),
        _result(tmp_path / "old.json", "POPE", {"f1": 80.0}),  # from before protocols
    ]
    tables = build_tables(paths)
    assert [(t.benchmark, t.protocol) for t in tables] == [
        ("ScienceQA", "official"),
        ("ScienceQA", "official + gpt arbitration"),
        ("ScienceQA", "lenient"),
        ("TextVQA", "llava15"),
        ("TextVQA", "multimodalocr"),
        ("POPE", "unrecorded"),
    ]
    sqa = tables[0]
    assert [r.label for r in sqa.rows] == [
        "tiny",
        f"tiny [{paths[1]}]",  # same name twice: told apart by the file
        "LLaVA",
        "LLaVAR",
        "LLaVA-1.5-7B",
    ]
    assert sqa.rows[0].notes == "2/10 missing; 1 unparsed"
    assert [r.label for r in tables[1].rows] == ["tiny + gpt arbitration"]
    assert not any(r.published for r in tables[2].rows)  # no paper used the lenient reader
    assert [r.metrics["accuracy"] for r in tables[3].rows if r.published] == [58.2]
    assert [r.metrics["accuracy"] for r in tables[4].rows if r.published] == [
        31.0,
        39.5,
        36.7,
        48.5,
        52.1,
    ]
    assert not any(r.published for r in tables[5].rows)

    text = markdown(tables)
    assert (
        "## ScienceQA — protocol `official`\n\nScored as eval_science_qa.py.\n\n"
        "| run | accuracy | NAT | IMG | notes |\n|---|---:|---:|---:|---|"
    ) in text
    assert "| tiny | 81.50 | 80.00 | – | 2/10 missing; 1 unparsed |" in text
    assert f"| tiny [{paths[1]}] | 70.00 | – | – |  |" in text
    assert "| *LLaVA-1.5-7B (published)* | – | – | 66.80 | LLaVA-1.5 paper / MODEL_ZOO, " in text
    assert "| *LLaVAR + high-res 896px (published)* | 52.10 | LLaVAR paper, protocol " in text
    assert "## POPE — protocol `unrecorded`\n\nThese results do not record the protocol" in text

    without = build_tables(paths, include_published=False)
    assert not any(r.published for t in without for r in t.rows)


def test_write_report_writes_markdown_chart_and_data(tmp_path):
    paths = [
        _result(
            tmp_path / "r1.json",
            "LLaVA-Bench (COCO)",
            {"overall": 60.0, "conversation": 70.0},
            model_id="m",
            protocol="official",
            judge="gpt-4o",
            n_failed=2,
            n_retried=3,
        ),
        _result(
            tmp_path / "r2.json",
            "MME",
            {"perception": 900.0, "cognition": 200.0, "OCR": 65.0},
            model_id="m",
            protocol="official",
            protocol_reference="MME calculation.py",
            subtasks={"OCR": {}},
            absent_subtasks=["count", "color"],
        ),
    ]
    written = write_report(paths, tmp_path / "report")
    text = written["markdown"].read_text()
    assert (
        "| m | 60.00 | 70.00 | judge gpt-4o; 3 reviews retried; 2 unparsable reviews (counted "
        "as -1/-1 as the reference does) |"
    ) in text
    assert (
        "| *LLaVA (published)* | 85.10 | – | LLaVA paper, protocol official; judge gpt-4-0314 |"
        in text
    )
    assert "Published rows were judged by gpt-4-0314; our rows by gpt-4o" in text
    assert "| *LLaVAR (published)* | – | – | 80.00 | LLaVAR paper, protocol official |" in text
    with Image.open(written["chart"]) as chart:
        assert chart.format == "PNG" and chart.width > 500 and chart.height > 200
    data = json.loads(written["data"].read_text())
    mme = data["tables"][1]
    assert (mme["benchmark"], mme["protocol"], mme["protocol_reference"]) == (
        "MME",
        "official",
        "MME calculation.py",
    )
    assert mme["rows"][0] == {
        "run": "m",
        "published": False,
        "metrics": {"perception": 900.0, "cognition": 200.0, "OCR": 65.0},
        "notes": "totals over 1 subtasks, 2 absent",
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
