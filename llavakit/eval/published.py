"""Numbers published by the LLaVA and LLaVAR papers, shown next to our runs in reports.

Each entry names the benchmark exactly as our scorers' results do (`result["benchmark"]`) and
the metric as our results name it, so a report can put them in the same table. Sources: LLaVA
(arXiv 2304.08485) and LLaVAR (arXiv 2306.17107); the LLaVAR text-VQA numbers use the same
contains-answer protocol as `tasks/textvqa.py`. The MME OCR numbers are approximate (the LLaVAR
paper reports the OCR score rising from about 50 to about 80).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PublishedResult:
    """One published row: a model's numbers on one benchmark."""

    benchmark: str
    run: str
    metrics: tuple[tuple[str, float], ...]
    source: str


def _text_vqa(run: str, st: float, ocr: float, text: float, doc: float) -> tuple:
    return tuple(
        PublishedResult(name, run, (("accuracy", value),), "LLaVAR paper")
        for name, value in (("ST-VQA", st), ("OCR-VQA", ocr), ("TextVQA", text), ("DocVQA", doc))
    )


PUBLISHED: tuple[PublishedResult, ...] = (
    PublishedResult("ScienceQA", "LLaVA", (("accuracy", 90.92),), "LLaVA paper"),
    PublishedResult("ScienceQA", "LLaVA + GPT-4 (judge)", (("accuracy", 92.53),), "LLaVA paper"),
    PublishedResult("ScienceQA", "LLaVAR", (("accuracy", 91.42),), "LLaVAR paper"),
    PublishedResult("LLaVA-Bench", "LLaVA", (("overall", 85.1),), "LLaVA paper"),
    PublishedResult("MME", "LLaVA (approx.)", (("OCR", 50.0),), "LLaVAR paper"),
    PublishedResult("MME", "LLaVAR (approx.)", (("OCR", 80.0),), "LLaVAR paper"),
    *_text_vqa("LLaVA 224px", 24.3, 10.8, 31.0, 5.2),
    *_text_vqa("LLaVAR 224px", 30.2, 23.4, 39.5, 6.2),
    *_text_vqa("LLaVA 336px", 28.9, 11.0, 36.7, 6.9),
    *_text_vqa("LLaVAR 336px", 39.2, 23.8, 48.5, 11.6),
    *_text_vqa("LLaVAR + high-res 896px", 42.1, 30.8, 52.1, 18.5),
)
