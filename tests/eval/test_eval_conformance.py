"""LLaVAR's released predictions, scored by our protocols, give the LLaVAR paper's table.

The files are third-party data kept outside the repository, in the project's shared folder next
to it (`../shared`, or the folder `LLAVAKIT_SHARED` names, for a clone kept elsewhere); without
them the test is skipped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llavakit.eval.conformance import LLAVAR_RELEASE, run_checks

SHARED = Path(
    os.environ.get("LLAVAKIT_SHARED", Path(__file__).resolve().parents[2] / ".." / "shared")
)
FOLDER = SHARED / "reference" / "llavar_predictions"


@pytest.mark.skipif(
    not FOLDER.is_dir(), reason=f"{FOLDER} is absent (LLaVAR's released predictions)"
)
def test_llavar_release_reproduces_the_published_table():
    rows = run_checks(FOLDER)
    measured = {row["file"]: round(row["measured"], 2) for row in rows}
    assert measured == {
        "textVQA.json": 48.54,
        "STVQA.json": 39.16,
        "ocrVQA.json": 23.76,
        "docVQA.json": 11.57,
        "OCR_llava.txt": 50.0,
        "OCR_llavar.txt": 80.0,
    }
    assert all(row["agrees"] for row in rows)
    assert [row["n"] for row in rows] == [5000, 5000, 5000, 5349, 40, 40]
    assert [c.file for c in LLAVAR_RELEASE] == list(measured)
