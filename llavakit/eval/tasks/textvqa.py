"""Text-rich VQA in the MultimodalOCR protocol (as in LLaVAR): TextVQA, ST-VQA, OCR-VQA, DocVQA.

A prediction is correct when any ground-truth answer occurs in it, ignoring case: both sides are
NFKC-normalised, case-folded (so "STRASSE" matches "straße") and have runs of whitespace,
newlines included, collapsed to one space. Empty ground-truth answers are ignored (the empty
string occurs in everything); an empty prediction is wrong.

Getting the data
    - TextVQA: textvqa.org (`TextVQA_0.5.1_val.json`, images `train_images/`). Its annotation
      file can be given as the question file directly: a JSON object whose `"data"` list holds
      `question_id`, `question`, `image_id` and `answers` (ten strings).
    - ST-VQA (rrc.cvc.uab.es, task 3), OCR-VQA (ocr-vqa.github.io), DocVQA (rrc.cvc.uab.es,
      task 1 / docvqa.org): convert to the layout below.

Question file (one JSON object per line)
    `question_id`; `image`; `text` (the prompt); `answers` (list of acceptable strings) or
    `answer` (one string).
"""

from __future__ import annotations

import os
from types import MappingProxyType
from typing import Any

from llavakit.eval.files import match_answers, normalize_text, percent

BENCHMARKS = MappingProxyType(
    {
        "textvqa": "TextVQA",
        "stvqa": "ST-VQA",
        "ocrvqa": "OCR-VQA",
        "docvqa": "DocVQA",
    }
)
"""Accepted `dataset` names (lower case, no punctuation) → the name reports use."""


def contains_answer(prediction: str, answers: list[str]) -> bool:
    """True when a non-empty ground-truth answer occurs in the prediction (normalised)."""
    predicted = normalize_text(prediction)
    return any(truth and truth in predicted for truth in map(normalize_text, answers))


def benchmark_name(dataset: str) -> str:
    """The display name for a dataset name such as "textvqa", "ST-VQA" or "doc_vqa"."""
    key = "".join(ch for ch in dataset.casefold() if ch.isalnum())
    if key not in BENCHMARKS:
        raise ValueError(
            f"unknown text-VQA dataset {dataset!r}; expected one of {sorted(BENCHMARKS)}"
        )
    return BENCHMARKS[key]


def ground_truth(record: dict[str, Any], path: Any) -> list[str]:
    """The acceptable answers of a question record (`answers` list or `answer` string)."""
    value = record.get("answers", record.get("answer"))
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise ValueError(
            f"{path}: question {record.get('question_id')!r}: expected 'answers' (a list of "
            f"strings) or 'answer' (a string), got {value!r}"
        )
    if not any(a.strip() for a in value):
        raise ValueError(f"{path}: question {record.get('question_id')!r}: all answers are empty")
    return value


def score_textvqa(
    questions: str | os.PathLike, answers: str | os.PathLike, *, dataset: str = "textvqa"
) -> dict[str, Any]:
    """Contains-match accuracy (%) of an answer file."""
    name = benchmark_name(dataset)
    matched = match_answers(questions, answers)
    items = []
    for question, answer in matched.pairs:
        truths = ground_truth(question, questions)
        prediction = answer["text"] if answer else ""
        items.append(
            {
                "question_id": str(question["question_id"]),
                "prediction": prediction,
                "answers": truths,
                "correct": contains_answer(prediction, truths),
                "missing": answer is None,
            }
        )
    return {
        "task": "textvqa",
        "benchmark": name,
        **matched.summary(),
        "metrics": {"accuracy": percent(sum(i["correct"] for i in items), len(items))},
        "items": items,
    }
