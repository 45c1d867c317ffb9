"""Comparing scored runs: one Markdown table per benchmark and protocol, and a bar chart.

`write_report(["a/results.json", "b/results.json"], out_dir)` writes `report.md`, `report.png`
and `report.json`. Each results file is one scorer's result dict. Its `benchmark` and
`protocol` (`llavakit.eval.protocols`) choose its table: numbers scored by different protocols
never share a table, and each table says which protocol produced it and what that protocol
reproduces. A result's `metrics` are the table's columns (the first is the headline, drawn in
the chart) and its `variants` (e.g. ScienceQA's teacher ensemble) become rows of the table of
their own protocol. The papers' numbers (`llavakit.eval.published`) follow our rows only in
the table of the protocol that produced them; for judged benchmarks both our rows and the
published ones name their judge, and the table says so when the judges differ. A results file
without a protocol (written before protocols were recorded) gets a table of its own and no
published rows. A run is named by the result's `run`, else its `model_id`, else its folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llavakit.eval.files import read_json, write_results
from llavakit.eval.published import PUBLISHED

UNRECORDED = "unrecorded"
"""The protocol of a results file that does not say which one scored it."""


@dataclass
class Row:
    """One line of a table."""

    label: str
    metrics: dict[str, float | None]
    published: bool = False
    notes: str = ""
    judge: str | None = None


@dataclass
class BenchmarkTable:
    """Every row for one benchmark under one protocol, ours first."""

    benchmark: str
    protocol: str
    reference: str = ""
    """What the protocol reproduces (from the results), shown under the table's title."""
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

    @property
    def title(self) -> str:
        return f"{self.benchmark} — protocol `{self.protocol}`"

    def judge_warning(self) -> str | None:
        """A sentence when published rows used another judge than our rows."""
        ours = {r.judge for r in self.rows if not r.published and r.judge}
        theirs = {r.judge for r in self.rows if r.published and r.judge}
        if ours and theirs and ours != theirs:
            return (
                f"Published rows were judged by {', '.join(sorted(theirs))}; our rows by "
                f"{', '.join(sorted(ours))}: same protocol, different judge, so the numbers are "
                "not measured the same way."
            )
        return None


def load_result(path: str | os.PathLike) -> dict[str, Any]:
    """Read one results file, checking it has what a report needs."""
    result = read_json(path, "results file")
    if not isinstance(result, dict) or not isinstance(result.get("benchmark"), str):
        raise ValueError(f"{path}: not a llavakit results file (no 'benchmark' field)")
    if not isinstance(result.get("metrics"), dict) or not result["metrics"]:
        raise ValueError(f"{path}: results file has no 'metrics'")
    return result


def run_label(result: dict[str, Any], path: str | os.PathLike) -> str:
    return result.get("run") or result.get("model_id") or Path(path).resolve().parent.name


def notes(result: dict[str, Any]) -> str:
    """What a reader must know before trusting a row: missing answers, unreadable replies,
    the judge and how its reviews went."""
    parts = []
    if result.get("n_missing"):
        parts.append(f"{result['n_missing']}/{result.get('n_questions', '?')} missing")
    if result.get("n_unparsed"):
        parts.append(f"{result['n_unparsed']} unparsed")
    if result.get("absent_subtasks"):
        present = len(result.get("subtasks") or {})
        parts.append(f"totals over {present} subtasks, {len(result['absent_subtasks'])} absent")
    if result.get("judge"):
        parts.append(f"judge {result['judge']}")
    if result.get("n_retried"):
        parts.append(f"{result['n_retried']} reviews retried")
    if result.get("n_failed"):
        counted = (
            "counted as -1/-1 as the reference does"
            if result.get("protocol") == "official"
            else "left out"
        )
        parts.append(f"{result['n_failed']} unparsable reviews ({counted})")
    if result.get("n_unjudged"):
        parts.append(f"{result['n_unjudged']} not judged (judge errors)")
    return "; ".join(parts)


def build_tables(
    paths: list[str | os.PathLike], include_published: bool = True
) -> list[BenchmarkTable]:
    """Group the results by benchmark and protocol (in the order given), add published rows."""
    if not paths:
        raise ValueError("no results files given")
    tables: dict[tuple[str, str], BenchmarkTable] = {}

    def table(benchmark: str, protocol: str, reference: str) -> BenchmarkTable:
        return tables.setdefault(
            (benchmark, protocol), BenchmarkTable(benchmark, protocol, reference)
        )

    for path in paths:
        result = load_result(path)
        protocol = result.get("protocol") or UNRECORDED
        home = table(result["benchmark"], protocol, result.get("protocol_reference", ""))
        label = run_label(result, path)
        if any(row.label == label for row in home.rows):
            label = f"{label} [{path}]"
        home.rows.append(
            Row(label, result["metrics"], notes=notes(result), judge=result.get("judge"))
        )
        for variant, extra in (result.get("variants") or {}).items():
            target = table(
                result["benchmark"],
                extra.get("protocol", protocol),
                extra.get("protocol_reference", home.reference),
            )
            target.rows.append(Row(f"{label} {variant}", extra["metrics"]))
    if include_published:
        for entry in PUBLISHED:
            target = tables.get((entry.benchmark, entry.protocol))
            if target is not None:
                judged = f"; judge {entry.judge}" if entry.judge else ""
                target.rows.append(
                    Row(
                        entry.run,
                        dict(entry.metrics),
                        published=True,
                        notes=f"{entry.source}, protocol {entry.protocol}{judged}",
                        judge=entry.judge,
                    )
                )
    return list(tables.values())


def _cell(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "–"


def markdown(tables: list[BenchmarkTable]) -> str:
    """The report as Markdown: one table per benchmark and protocol; published rows in
    italics."""
    lines = ["# Evaluation report", ""]
    for table in tables:
        columns = table.columns
        lines += [f"## {table.title}", ""]
        if table.protocol == UNRECORDED:
            lines += ["These results do not record the protocol that scored them.", ""]
        elif table.reference:
            lines += [f"Scored as {table.reference}.", ""]
        lines.append("| run | " + " | ".join(columns) + " | notes |")
        lines.append("|---|" + "---:|" * len(columns) + "---|")
        for row in table.rows:
            label = f"*{row.label} (published)*" if row.published else row.label
            cells = [_cell(row.metrics.get(c)) for c in columns]
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {row.notes} |")
        lines.append("")
        if table.judge_warning():
            lines += [table.judge_warning(), ""]
    return "\n".join(lines)


def bar_chart(tables: list[BenchmarkTable], path: str | os.PathLike) -> Path:
    """One panel per table: its headline metric for every row that has it, published bars
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
        ax.set_title(
            f"{table.benchmark} [{table.protocol}]: {table.headline}", fontsize=10, loc="left"
        )
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
    data = [
        {
            "benchmark": t.benchmark,
            "protocol": t.protocol,
            "protocol_reference": t.reference,
            "rows": [
                {"run": r.label, "published": r.published, "metrics": r.metrics, "notes": r.notes}
                for r in t.rows
            ],
        }
        for t in tables
    ]
    return {
        "markdown": markdown_path,
        "chart": bar_chart(tables, out_dir / "report.png"),
        "data": write_results({"tables": data}, out_dir / "report.json"),
    }


def summary(result: dict[str, Any]) -> str:
    """A few lines for the terminal after scoring: protocol, metrics, variants and warnings."""
    protocol = result.get("protocol") or UNRECORDED
    lines = [f"{result['benchmark']} ({result.get('model_id') or 'unnamed model'}):"]
    lines.append(f"  protocol {protocol}: {result.get('protocol_reference', '')}".rstrip(": "))
    lines.append("  " + ", ".join(f"{k} {_cell(v)}" for k, v in result["metrics"].items()))
    for variant, extra in (result.get("variants") or {}).items():
        headline = next(iter(extra["metrics"].items()))
        lines.append(
            f"  {variant} (protocol {extra.get('protocol', protocol)}): "
            f"{headline[0]} {_cell(headline[1])}"
        )
    if notes(result):
        lines.append(f"  notes: {notes(result)}")
    return "\n".join(lines)
