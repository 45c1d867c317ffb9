"""Conformance: our scorers reproduce tables that were published with their predictions.

LLaVAR released its MultimodalOCR answer files and its MME OCR result files. Scored with our
`multimodalocr` and MME `official` protocols they must give the LLaVAR paper's numbers to the
digit; a scorer that decides differently from the reference on even a handful of the 20,349
answers shows here. The files are third-party data and are not shipped: `bench/eval_conformance.py`
and the test suite read them from the project's shared reference folder
(`../shared/reference/llavar_predictions/` next to the repository).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Check:
    """One published number and the released file it must be reproduced from."""

    file: str
    dataset: str
    """"textvqa", "stvqa", "ocrvqa", "docvqa" (MultimodalOCR answers) or "mme" (OCR results)."""
    protocol: str
    metric: str
    published: float
    decimals: int
    """Digits after the point that the published number has, and that must agree."""


LLAVAR_RELEASE = (
    Check("textVQA.json", "textvqa", "multimodalocr", "accuracy", 48.54, 2),
    Check("STVQA.json", "stvqa", "multimodalocr", "accuracy", 39.16, 2),
    Check("ocrVQA.json", "ocrvqa", "multimodalocr", "accuracy", 23.76, 2),
    Check("docVQA.json", "docvqa", "multimodalocr", "accuracy", 11.57, 2),
    Check("OCR_llava.txt", "mme", "official", "OCR", 50, 0),
    Check("OCR_llavar.txt", "mme", "official", "OCR", 80, 0),
)
"""LLaVAR (arXiv 2306.17107): its 336-px row of the text-VQA table and MME OCR (LLaVA → LLaVAR)."""


def score_release_file(folder: str | os.PathLike, check: Check) -> dict[str, Any]:
    """Our result dict for one released file, scored under the check's protocol."""
    path = Path(folder) / check.file
    if check.dataset == "mme":
        from llavakit.eval.tasks.mme import score_mme_results

        return score_mme_results([path], subtask="OCR", protocol=check.protocol)
    from llavakit.eval.tasks.textvqa import score_multimodalocr_answers

    return score_multimodalocr_answers(path, dataset=check.dataset, protocol=check.protocol)


def run_checks(
    folder: str | os.PathLike, checks: tuple[Check, ...] = LLAVAR_RELEASE
) -> list[dict[str, Any]]:
    """For every check: what we measure, what was published, and whether they agree."""
    rows = []
    for check in checks:
        result = score_release_file(folder, check)
        measured = result["metrics"][check.metric]
        rows.append(
            {
                "file": check.file,
                "benchmark": result["benchmark"],
                "protocol": result["protocol"],
                "n": result["n_questions"],
                "measured": measured,
                "published": check.published,
                "agrees": round(measured, check.decimals) == check.published,
            }
        )
    return rows
