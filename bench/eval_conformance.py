"""Conformance of the evaluation protocols: LLaVAR's released predictions → the LLaVAR table.

Scores LLaVAR's MultimodalOCR answer files with the `multimodalocr` protocol and its MME OCR
result files with MME's `official` protocol, and prints each number beside the one the LLaVAR
paper published (TextVQA 48.54, ST-VQA 39.16, OCR-VQA 23.76, DocVQA 11.57; MME OCR 50 → 80).
Exits 1 if any differs. The files are third-party data kept outside the repository:

    .venv/bin/python bench/eval_conformance.py [--folder ../shared/reference/llavar_predictions]

(`LLAVAKIT_SHARED` names the shared folder for a clone that does not sit beside it.)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llavakit.eval.conformance import run_checks  # noqa: E402

SHARED = Path(os.environ.get("LLAVAKIT_SHARED", REPO / ".." / "shared"))
DEFAULT_FOLDER = SHARED / "reference" / "llavar_predictions"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER, help="LLaVAR's files")
    args = parser.parse_args()
    if not args.folder.is_dir():
        print(f"{args.folder}: no such folder (LLaVAR's released predictions)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    rows = run_checks(args.folder)
    print("| file | benchmark | protocol | n | measured | published | agrees |")
    print("|---|---|---|---:|---:|---:|---|")
    for row in rows:
        print(
            f"| {row['file']} | {row['benchmark']} | {row['protocol']} | {row['n']} | "
            f"{row['measured']:.2f} | {row['published']:g} | {'yes' if row['agrees'] else 'NO'} |"
        )
    print(
        f"\n{sum(r['agrees'] for r in rows)}/{len(rows)} agree "
        f"({time.perf_counter() - started:.1f} s)"
    )
    return 0 if all(r["agrees"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
