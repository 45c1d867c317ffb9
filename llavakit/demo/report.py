"""The demo's report: report.json (numbers), report.md (for people) and PNG plots."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

TARGETS = {"existence": 0.95, "colour": 0.95, "counting": 0.85, "position": 0.85, "reading": 0.7}
"""Held-out accuracy targets after stage 2 (issue: embedded world and demo)."""
ABLATION_COLUMNS = {
    "accuracy_without_llavar": "final without LLaVAR data",
    "accuracy_with_highres": "final with the high-res branch",
}
"""Report columns of the demo's ablations (demo/ablations.py), by their result key."""


def ablation_columns(report: dict) -> dict[str, dict[str, float]]:
    """Column title -> accuracy per category, for every ablation the report holds."""
    found = report.get("ablation", {})
    return {title: found[key] for key, title in ABLATION_COLUMNS.items() if key in found}


def interval95(scores: Sequence[float]) -> tuple[float, float]:
    """95% interval of a mean score: Wilson's for right/wrong scores (sound near 0 and 1), the
    normal approximation for fractional ones (detail's share of objects named)."""
    n = len(scores)
    if n == 0:
        return (0.0, 1.0)
    mean = sum(scores) / n
    z = 1.96
    if all(score in (0.0, 1.0) for score in scores):
        centre = (mean + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    else:
        variance = sum((score - mean) ** 2 for score in scores) / max(1, n - 1)
        centre, half = mean, z * math.sqrt(variance / n)
    return (round(max(0.0, centre - half), 3), round(min(1.0, centre + half), 3))


def write_report(out: Path, report: dict) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    plot_losses(out / "loss_curves.png", report["loss"])
    plot_accuracy(out / "accuracy.png", report)
    if report.get("curve"):
        plot_curve(out / "accuracy_curve.png", report["curve"])
    (out / "report.md").write_text(markdown(report))


def markdown(report: dict) -> str:
    ablations = ablation_columns(report)
    header = "| category | questions | stage 1 only | final | final, 95% interval | target |"
    rule = "|---|---|---|---|---|---|"
    for title in ablations:
        header += f" {title} |"
        rule += "---|"
    rows = [header, rule]
    for category, n in report["n_questions"].items():
        target = TARGETS.get(category)
        low, high = report.get("interval", {}).get(category, (0.0, 1.0))
        row = (
            f"| {category} | {n} | {report['accuracy_stage1'].get(category, 0):.2f} | "
            f"{report['accuracy'][category]:.2f} | {low:.2f}-{high:.2f} | "
            f"{f'≥ {target:.2f}' if target else '-'} |"
        )
        for values in ablations.values():
            row += f" {values.get(category, 0):.2f} |"
        rows.append(row)
    seconds = "\n".join(f"| {step} | {s:.1f} |" for step, s in report["seconds"].items())
    chat = "\n".join(
        f"- **{turn['question']}** (`{turn['image']}`)\n  > {turn['answer'] or '(empty)'}"
        for turn in report["chat"]
    )
    data = ", ".join(f"{name}: {n}" for name, n in report["data"].items())
    curve = curve_section(report.get("curve", []))
    stage0 = stage0_section(report.get("stage0", {}))
    precision = report.get("sizes", {}).get("precision", "not recorded")
    return f"""# llavakit demo report

The whole LLaVA + LLaVAR pipeline on the embedded synthetic world: world -> teacher data ->
stage 0 (tokenizer, CLIP, LLM) -> stage 1 (align) -> stage 2 (instruct) -> held-out evaluation.

## Held-out accuracy

{chr(10).join(rows)}

![accuracy](accuracy.png)
{curve}{stage0}
## Training loss

![loss curves](loss_curves.png)

## Data (records)

{data}

## Sample chat (final model, held-out images)

{chat}

## Time per step (seconds; {report["total_seconds"]:.0f} s in all; training precision {precision})

| step | seconds |
|---|---|
{seconds}

Final checkpoint: `{report["checkpoint"]}` (`llavakit chat {report["checkpoint"]} --image IMG`).
"""


def stage0_section(stage0: dict) -> str:
    """Where the pretrained CLIP and LLM came from, and what they bring ('' when unknown)."""
    llm, clip = stage0.get("llm"), stage0.get("clip")
    if not llm or not clip:
        return ""
    if "source" in stage0:
        origin = (
            f"The stand-ins from `{stage0['source']}` (built {stage0.get('built')}, "
            f"{stage0.get('build_minutes')} minutes each; demo/stand_ins.py), copied in as a "
            "user's run copies in a downloaded CLIP and Vicuna."
        )
    else:
        origin = "Trained inside this run (`--stage0 train`)."
    in_words = ", ".join(f"{c} {v:.2f}" for c, v in llm.get("benchmark_in_words", {}).items())
    probes = ", ".join(f"{c} {v:.2f}" for c, v in clip.get("region_accuracy", {}).items())
    return f"""
## Stage 0 (the pretrained CLIP and LLM)

{origin}

- LLM: {llm.get("steps")} steps; this run's held-out questions with each image written in words
  (the text-only benchmark): {in_words or "not measured"}.
- CLIP: {clip.get("steps")} steps; held-out patch probes: {probes or "not measured"}.
"""


def plot_losses(path: Path, losses: dict[str, list[dict]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(losses), figsize=(5 * len(losses), 3.5))
    for ax, (stage, points) in zip(axes if len(losses) > 1 else [axes], losses.items()):
        ax.plot([p["step"] for p in points], [p["loss"] for p in points])
        ax.set_title(stage)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_accuracy(path: Path, report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    categories = list(report["n_questions"])
    series = {"stage 1 only": report["accuracy_stage1"], "final": report["accuracy"]}
    series |= ablation_columns(report)
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(categories)), 3.8))
    for index, (name, values) in enumerate(series.items()):
        xs = [c + index * width for c in range(len(categories))]
        ax.bar(xs, [values.get(c, 0) for c in categories], width, label=name)
    ax.set_xticks([c + width * (len(series) - 1) / 2 for c in range(len(categories))])
    ax.set_xticklabels(categories)
    ax.set_ylim(0, 1)
    ax.set_ylabel("held-out accuracy")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def curve_section(points: list[dict]) -> str:
    """Accuracy against demo time during stage 2, as a table and a plot ('' without a curve)."""
    if not points:
        return ""
    categories = list(points[-1]["accuracy"])
    rows = [
        "| demo minutes | stage-2 step | " + " | ".join(categories) + " |",
        "|---|---|" + "---|" * len(categories),
    ]
    for point in points:
        values = " | ".join(f"{point['accuracy'].get(c, 0):.2f}" for c in categories)
        rows.append(f"| {point['demo_seconds'] / 60:.1f} | {point['step']} | {values} |")
    return f"""
## Accuracy against time (stage 2, a fixed subset of the held-out questions)

{chr(10).join(rows)}

![accuracy against time](accuracy_curve.png)
"""


def plot_curve(path: Path, points: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [p["demo_seconds"] / 60 for p in points]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for category in points[-1]["accuracy"]:
        ax.plot(
            minutes, [p["accuracy"].get(category, 0) for p in points], marker="o", label=category
        )
    ax.set_xlabel("demo time (minutes, evaluation excluded)")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
