"""Comparing scored runs: a Markdown table per benchmark and a bar chart.

`write_report(["a/results.json", "b/results.json"], out_dir)` writes `report.md` and
`report.png`. Each results file is one scorer's result dict; its `benchmark` groups it with the
others, its `metrics` are the table's columns (the first metric is the benchmark's headline,
drawn in the chart) and its `variants` (e.g. ScienceQA's teacher ensemble) become extra rows.
The papers' numbers (`llavakit.eval.published`) for the same benchmark follow our rows, marked
as published. A run is named by the result's `run`, else its `model_id`, else its folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llavakit.eval.files import write_results
from llavakit.eval.published import PUBLISHED


@dataclass
class Row:
    """One line of a benchmark's table."""

    label: str
    metrics: dict[str, float | None]
    published: bool = False
    notes: str = ""


@dataclass
class BenchmarkTable:
    """Every row for one benchmark, ours first."""

    benchmark: str
    rows: list[Row] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        """Metric names in order of first appearance."""
        names: dict[str, None] = {}
        for row in self.rows:
            names.update(dict.fromkeys(row.metrics))
        return list(names)

    @property
    def headline(self) -> str:
        return self.columns[0]


def load_result(path: str | os.PathLike) -> dict[str, Any]:
    """Read one results file, checking it has what a report needs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such results file")
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
    if not isinstance(result, dict) or not isinstance(result.get("benchmark"), str):
        raise ValueError(f"{path}: not a llavakit results file (no 'benchmark' field)")
    if not isinstance(result.get("metrics"), dict) or not result["metrics"]:
        raise ValueError(f"{path}: results file has no 'metrics'")
    return result


def run_label(result: dict[str, Any], path: str | os.PathLike) -> str:
    return result.get("run") or result.get("model_id") or Path(path).resolve().parent.name


def notes(result: dict[str, Any]) -> str:
    """What a reader must know before trusting a row: missing answers, unreadable replies."""
    parts = []
    if result.get("n_missing"):
        parts.append(f"{result['n_missing']}/{result.get('n_questions', '?')} missing")
    if result.get("n_unparsed"):
        parts.append(f"{result['n_unparsed']} unparsed")
    if result.get("n_failed"):
        parts.append(f"{result['n_failed']} judge failures")
    return "; ".join(parts)


def build_tables(
    paths: list[str | os.PathLike], include_published: bool = True
) -> list[BenchmarkTable]:
    """Group the results by benchmark (in the order given) and add the published rows."""
    if not paths:
        raise ValueError("no results files given")
    tables: dict[str, BenchmarkTable] = {}
    for path in paths:
        result = load_result(path)
        table = tables.setdefault(result["benchmark"], BenchmarkTable(result["benchmark"]))
        label = run_label(result, path)
        if any(row.label == label for row in table.rows):
            label = f"{label} [{path}]"
        table.rows.append(Row(label, result["metrics"], notes=notes(result)))
        for variant, extra in (result.get("variants") or {}).items():
            table.rows.append(Row(f"{label} {variant}", extra["metrics"]))
    if include_published:
        for entry in PUBLISHED:
            if entry.benchmark in tables:
                tables[entry.benchmark].rows.append(
                    Row(entry.run, dict(entry.metrics), published=True, notes=entry.source)
                )
    return list(tables.values())


def _cell(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "–"


def markdown(tables: list[BenchmarkTable]) -> str:
    """The report as Markdown: one table per benchmark; published rows in italics."""
    lines = ["# Evaluation report", ""]
    for table in tables:
        columns = table.columns
        lines += [f"## {table.benchmark}", ""]
        lines.append("| run | " + " | ".join(columns) + " | notes |")
        lines.append("|---|" + "---:|" * len(columns) + "---|")
        for row in table.rows:
            label = f"*{row.label} (published)*" if row.published else row.label
            cells = [_cell(row.metrics.get(c)) for c in columns]
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {row.notes} |")
        lines.append("")
    return "\n".join(lines)


def bar_chart(tables: list[BenchmarkTable], path: str | os.PathLike) -> Path:
    """One panel per benchmark: its headline metric for every row that has it, published bars
    grey and hatched."""
    from matplotlib.figure import Figure

    panels = []
    for table in tables:
        rows = [r for r in table.rows if isinstance(r.metrics.get(table.headline), (int, float))]
        if rows:
            panels.append((table, rows[::-1]))  # barh draws bottom-up; keep the table's order
    heights = [len(rows) * 0.35 + 0.9 for _, rows in panels] or [1.0]
    figure = Figure(figsize=(8, sum(heights)), layout="constrained")
    axes = figure.subplots(len(heights), 1, squeeze=False, height_ratios=heights)[:, 0]
    for ax, (table, rows) in zip(axes, panels):
        bars = ax.barh(
            [row.label + (" (published)" if row.published else "") for row in rows],
            [row.metrics[table.headline] for row in rows],
            color=["#b0b0b0" if row.published else "#3b75af" for row in rows],
        )
        for bar, row in zip(bars, rows):
            if row.published:
                bar.set_hatch("//")
        ax.bar_label(bars, fmt="%.1f", padding=2, fontsize=8)
        ax.set_title(f"{table.benchmark}: {table.headline}", fontsize=10, loc="left")
        ax.tick_params(axis="y", labelsize=8)
        ax.margins(x=0.15)
    if not panels:
        axes[0].set_axis_off()
        axes[0].text(0.5, 0.5, "no values to plot", ha="center", va="center")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path


def write_report(
    paths: list[str | os.PathLike], out_dir: str | os.PathLike, include_published: bool = True
) -> dict[str, Path]:
    """Write report.md, report.png and report.json (the tables as data) into `out_dir`."""
    tables = build_tables(paths, include_published)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown_path = out_dir / "report.md"
    markdown_path.write_text(markdown(tables), encoding="utf-8")
    data = {
        t.benchmark: [
            {"run": r.label, "published": r.published, "metrics": r.metrics, "notes": r.notes}
            for r in t.rows
        ]
        for t in tables
    }
    return {
        "markdown": markdown_path,
        "chart": bar_chart(tables, out_dir / "report.png"),
        "data": write_results(data, out_dir / "report.json"),
    }


def summary(result: dict[str, Any]) -> str:
    """A few lines for the terminal after scoring: metrics, variants and warnings."""
    lines = [f"{result['benchmark']} ({result.get('model_id') or 'unnamed model'}):"]
    lines.append("  " + ", ".join(f"{k} {_cell(v)}" for k, v in result["metrics"].items()))
    for variant, extra in (result.get("variants") or {}).items():
        headline = next(iter(extra["metrics"].items()))
        lines.append(f"  {variant}: {headline[0]} {_cell(headline[1])}")
    if notes(result):
        lines.append(f"  warning: {notes(result)}")
    return "\n".join(lines)
