"""`llavakit datagen llavar filter`: keep the text-rich images of a folder, with scores to tune by.

LLaVAR kept LAION images that a document-image classifier called text (p > 0.8). We score what
OCR actually finds, which needs no extra model:
- text area: the fraction of the image covered by confident OCR line boxes;
- confident words: whitespace-separated words with at least `min_word_letters` letters on lines
  the recogniser is at least `min_confidence` sure of.
An image is kept when both reach their thresholds. With a CLIP folder that has a text tower, the
zero-shot probability that the image is text-rich (see `clip`) must also reach its
threshold. Every score is written to kept.jsonl / dropped.jsonl (with the reason for dropping)
and plotted in histogram.png, so thresholds can be tuned; rerunning with other thresholds reuses
the journaled OCR and only re-decides.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from llavakit.datagen.journal import Journal, write_records
from llavakit.datagen.llavar.items import (
    ImageItem,
    Shard,
    gather_items,
    journal_file,
    read_journals,
)
from llavakit.datagen.llavar.ocr import OcrConfig, OcrResult, ocr_items
from llavakit.datagen.ocr import DEFAULT_MIN_CONFIDENCE
from llavakit.datagen.ocr.engines import OcrLine, confident

AREA_GRID = 256
"""Text area is measured on a mask whose longer side is this many cells."""


@dataclass(frozen=True)
class FilterThresholds:
    """When an image counts as text-rich.

    The defaults keep an image with at least one confident word when its text covers at least
    3% of it: a prominent title or sign, or a page of small print. They separate the synthetic
    world's signs, posters, labels and covers (1-4 words) from its shape scenes (bench/ocr.py).
    For LAION-like data, where LLaVAR wanted posters, covers and infographics, raise `min_words`
    (e.g. to 5) after a look at histogram.png.
    """

    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    """OCR lines below this confidence are ignored."""
    min_word_letters: int = 3
    """A word counts when it has at least this many letters."""
    min_words: int = 1
    """Keep only images with at least this many confident words."""
    min_text_area: float = 0.03
    """Keep only images whose confident text boxes cover at least this fraction of the image."""
    min_clip_probability: float = 0.5
    """With a CLIP folder: keep only images with zero-shot P(text-rich) at least this."""


@dataclass
class FilterOptions:
    """`llavakit datagen llavar filter`."""

    out: Path
    """Output folder: kept.jsonl, dropped.jsonl, histogram.png and journal/."""
    images: Path | None = None
    """Image folder (scanned recursively); with `lists`, the root the listed images are under."""
    lists: tuple[Path, ...] = ()
    """JSONL lists of images from an earlier step, instead of scanning `images`."""
    clip: Path | None = None
    """Local CLIP folder for zero-shot scores (skipped with a note if it has no text tower)."""
    thresholds: FilterThresholds = field(default_factory=FilterThresholds)
    ocr: OcrConfig = field(default_factory=OcrConfig)
    shard: Shard = field(default_factory=Shard)
    workers: int = 1
    """OCR worker processes."""
    device: str = "cpu"
    """Torch device for CLIP."""
    batch_size: int = 16
    """Images per CLIP forward pass."""
    progress: bool = True


def text_scores(result: OcrResult, thresholds: FilterThresholds) -> dict[str, float]:
    """The OCR text-richness scores of one image (see the module docstring)."""
    lines = confident(result.lines, thresholds.min_confidence)
    words = sum(
        1
        for line in lines
        for word in line.text.split()
        if sum(c.isalpha() for c in word) >= thresholds.min_word_letters
    )
    return {
        "text_area": round(text_area_fraction(lines, result.width, result.height), 5),
        "confident_words": words,
    }


def text_area_fraction(lines: Sequence[OcrLine], width: int, height: int) -> float:
    """Fraction of the image covered by the union of the lines' boxes."""
    import cv2

    if not lines or width <= 0 or height <= 0:
        return 0.0
    scale = min(1.0, AREA_GRID / max(width, height))
    mask = np.zeros((max(1, round(height * scale)), max(1, round(width * scale))), np.uint8)
    polygons = [np.round(np.asarray(line.box) * scale).astype(np.int32) for line in lines]
    cv2.fillPoly(mask, polygons, 1)
    return float(mask.mean())


def drop_reason(scores: dict[str, Any], thresholds: FilterThresholds) -> tuple[str, str] | None:
    """(short label, detail) saying why an image is not text-rich, or None to keep it."""
    if scores["confident_words"] < thresholds.min_words:
        detail = f"{scores['confident_words']} confident words < {thresholds.min_words}"
        return "too few words", detail
    if scores["text_area"] < thresholds.min_text_area:
        return (
            "small text area",
            f"text area {scores['text_area']:.4f} < {thresholds.min_text_area}",
        )
    clip = scores.get("clip_text_probability")
    if clip is not None and clip < thresholds.min_clip_probability:
        detail = f"CLIP P(text-rich) {clip:.3f} < {thresholds.min_clip_probability}"
        return "low CLIP score", detail
    return None


def clip_probabilities(
    items: Sequence[ImageItem], options: FilterOptions, journal_dir: Path
) -> dict[str, float]:
    """Zero-shot P(text-rich) per readable item, journaled like OCR; {} when CLIP is skipped."""
    from llavakit.datagen.llavar.clip import ClipModel
    from llavakit.image import ImageLoadError, load_image

    assert options.clip is not None
    clip = ClipModel.load(options.clip, options.device)
    if not clip.has_text:
        print(
            f"note: {options.clip} has no text model or tokenizer; CLIP scores skipped",
            file=sys.stderr,
        )
        return {}
    signature = str(Path(options.clip).resolve())
    journal = Journal(journal_file(journal_dir, "clip", options.shard))
    journal.load()
    probabilities = {
        key: item["p_text"]
        for key, item in read_journals(journal_dir, "clip").items()
        if item.get("clip") == signature
    }
    todo = [item for item in items if item.key not in probabilities]
    with (
        journal,
        tqdm(total=len(todo), desc="clip", unit="img", disable=not options.progress) as bar,
    ):
        for start in range(0, len(todo), options.batch_size):
            batch, images = [], []
            for item in todo[start : start + options.batch_size]:
                try:
                    images.append(load_image(item.path, max_pixels=options.ocr.max_pixels))
                    batch.append(item)
                except ImageLoadError:
                    pass  # already reported by OCR as this image's error
            scores = clip.text_rich_probability(images) if images else []
            for item, score in zip(batch, scores):
                probabilities[item.key] = round(float(score), 5)
                journal.append(item.key, {"clip": signature, "p_text": probabilities[item.key]})
            bar.update(len(todo[start : start + options.batch_size]))
    return probabilities


def run_filter(options: FilterOptions) -> str:
    """The filter command; returns the report printed at the end."""
    items = gather_items(options.images, options.lists, options.shard)
    out = Path(options.out)
    journal_dir = out / "journal"
    results = ocr_items(
        items, options.ocr, journal_dir, options.shard, options.workers, options.progress
    )
    clip = clip_probabilities(items, options, journal_dir) if options.clip else {}
    kept, dropped = [], []
    reasons: Counter[str] = Counter()
    signature = options.ocr.signature()
    for item in items:
        result = results[item.key]
        record = result.to_dict(signature)
        if result.error is not None:
            record["reason"] = "unreadable image"
            dropped.append(record)
            reasons["unreadable image"] += 1
            continue
        scores: dict[str, Any] = text_scores(result, options.thresholds)
        if item.key in clip:
            scores["clip_text_probability"] = clip[item.key]
        record["scores"] = scores
        reason = drop_reason(scores, options.thresholds)
        if reason is None:
            kept.append(record)
        else:
            reasons[reason[0]] += 1
            record["reason"] = reason[1]
            dropped.append(record)
    shard = options.shard
    write_records(shard.output(out / "kept.jsonl"), kept)
    write_records(shard.output(out / "dropped.jsonl"), dropped)
    histogram = shard.output(out / "histogram.png")
    plot_scores(kept, dropped, options.thresholds, histogram)
    lines = [
        f"images: {len(items)}, kept {len(kept)}, dropped {len(dropped)}",
        *(f"  dropped {count}x: {reason}" for reason, count in reasons.most_common()),
        f"wrote {shard.output(out / 'kept.jsonl')}, {shard.output(out / 'dropped.jsonl')}, "
        f"{histogram}",
    ]
    return "\n".join(lines)


def plot_scores(
    kept: Sequence[dict[str, Any]],
    dropped: Sequence[dict[str, Any]],
    thresholds: FilterThresholds,
    path: Path,
) -> None:
    """Histograms of each score for kept and dropped images, with the thresholds marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("text_area", "text area (fraction of image)", thresholds.min_text_area),
        (
            "confident_words",
            f"confident words (>= {thresholds.min_word_letters} letters)",
            thresholds.min_words,
        ),
    ]
    scored = [r for r in (*kept, *dropped) if "scores" in r]
    if any("clip_text_probability" in r["scores"] for r in scored):
        panels.append(
            ("clip_text_probability", "CLIP P(text-rich)", thresholds.min_clip_probability)
        )
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for axis, (name, title, threshold) in zip(axes[0], panels):
        values = [
            [r["scores"][name] for r in group if name in r.get("scores", {})]
            for group in (kept, dropped)
        ]
        everything = values[0] + values[1]
        bins = np.histogram_bin_edges(everything or [0.0, 1.0], bins=30)
        axis.hist(
            values,
            bins=bins,
            stacked=True,
            label=["kept", "dropped"],
            color=["tab:green", "tab:gray"],
        )
        axis.axvline(threshold, color="tab:red", linestyle="--", label="threshold")
        axis.set_title(title)
        axis.set_ylabel("images")
    axes[0][0].legend()
    figure.suptitle(f"text-richness: {len(kept)} kept, {len(dropped)} dropped")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
