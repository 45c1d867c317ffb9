"""Numbers published by the LLaVA, LLaVA-1.5 and LLaVAR papers, shown next to our runs.

Each entry names the benchmark and metric exactly as our scorers' results do, and the protocol
(`llavakit.eval.protocols`) that produced it, so a report puts it only in the table of runs
scored the same way. Sources: LLaVA (arXiv 2304.08485), LLaVA-1.5 (arXiv 2310.03744, its
MODEL_ZOO row for LLaVA-1.5-7B) and LLaVAR (arXiv 2306.17107). The LLaVAR text-VQA table and
MME OCR scores are reproduced exactly from LLaVAR's released predictions by
`bench/eval_conformance.py`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PublishedResult:
    """One published row: a model's numbers on one benchmark, and how they were measured."""

    benchmark: str
    run: str
    metrics: tuple[tuple[str, float], ...]
    source: str
    protocol: str
    """The protocol name, as our results record it, that produced these numbers."""
    judge: str | None = None
    """For judged benchmarks: the judge model behind the numbers."""


def _text_vqa(run: str, st: float, ocr: float, text: float, doc: float) -> tuple:
    return tuple(
        PublishedResult(name, run, (("accuracy", value),), "LLaVAR paper", "multimodalocr")
        for name, value in (("ST-VQA", st), ("OCR-VQA", ocr), ("TextVQA", text), ("DocVQA", doc))
    )


LLAVA_BENCH_JUDGE = "gpt-4-0314"
"""The judge model behind LLaVA's published LLaVA-Bench numbers (eval_gpt_review_bench.py)."""
_LLAVA15 = "LLaVA-1.5-7B"
_LLAVA15_SOURCE = "LLaVA-1.5 paper / MODEL_ZOO"

PUBLISHED: tuple[PublishedResult, ...] = (
    PublishedResult("ScienceQA", "LLaVA", (("accuracy", 90.92),), "LLaVA paper", "official"),
    PublishedResult("ScienceQA", "LLaVAR", (("accuracy", 91.42),), "LLaVAR paper", "official"),
    PublishedResult("ScienceQA", _LLAVA15, (("IMG", 66.8),), _LLAVA15_SOURCE, "official"),
    PublishedResult(
        "LLaVA-Bench (COCO)",
        "LLaVA",
        (("overall", 85.1),),
        "LLaVA paper",
        "official",
        LLAVA_BENCH_JUDGE,
    ),
    PublishedResult(
        "LLaVA-Bench (In-the-Wild)",
        _LLAVA15,
        (("overall", 65.4),),
        _LLAVA15_SOURCE,
        "official",
        LLAVA_BENCH_JUDGE,
    ),
    PublishedResult("MME", "LLaVA", (("OCR", 50.0),), "LLaVAR paper", "official"),
    PublishedResult("MME", "LLaVAR", (("OCR", 80.0),), "LLaVAR paper", "official"),
    PublishedResult("MME", _LLAVA15, (("perception", 1510.7),), _LLAVA15_SOURCE, "official"),
    PublishedResult("POPE", _LLAVA15, (("f1", 85.9),), _LLAVA15_SOURCE, "official"),
    PublishedResult("TextVQA", _LLAVA15, (("accuracy", 58.2),), _LLAVA15_SOURCE, "llava15"),
    *_text_vqa("LLaVA 224px", 24.3, 10.8, 31.0, 5.2),
    *_text_vqa("LLaVAR 224px", 30.2, 23.4, 39.5, 6.2),
    *_text_vqa("LLaVA 336px", 28.9, 11.0, 36.7, 6.9),
    *_text_vqa("LLaVAR 336px", 39.2, 23.8, 48.5, 11.6),
    *_text_vqa("LLaVAR + high-res 896px", 42.1, 30.8, 52.1, 18.5),
)
