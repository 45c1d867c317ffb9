"""POPE (Li et al. 2023): yes/no probes of object existence, hallucination measured as a
binary classification with "yes" as the positive class.

Per split (`category`: POPE's adversarial / popular / random samplings): accuracy = right /
all; precision = TP / predicted yes; recall = TP / truly yes; F1 their harmonic mean; yes-ratio
= predicted yes / all, all in %. The headline metrics are the means over the splits present
(LLaVA-1.5 reports the mean F1 of the three); a file without `category` is one split. A ratio
with nothing to divide is 0 (the reference script stops with a division error there).

Protocols
- `official` (default): haotian-liu/LLaVA `llava/eval/eval_pope.py` with its reader
  (`llavakit.eval.yesno.pope_official`: "no" when the first sentence, commas removed, has the
  word "No", "no" or "not" between single spaces; every other reply, an empty one included, is
  "yes"). The reference pairs answers with labels by file order within each split; we pair them
  by question id, which gives the same verdicts for files in order.
- `lenient`: llavakit's reader (`llavakit.eval.yesno.parse_yes_no`); a reply with no verdict
  counts as "not yes" (a false negative for a yes question, neither right nor a false positive
  for a no question) and is reported in `n_unparsed`.

A missing answer has no verdict under either protocol and is wrong.

Getting the data
    GitHub AoiDragon/POPE (`output/coco/coco_pope_{adversarial,popular,random}.json`, JSONL
    records with `question_id`, `image`, `text`, `label`) over COCO val2014 images.

        llavakit eval prepare pope --annotation-dir coco/ --out pope.jsonl

    writes one question file for the three splits (ids `<split>/<id>`, LLaVA-1.5's short-answer
    instruction after each question). LLaVA-1.5's own `llava_pope_test.jsonl` (no labels) is
    scored as it is with `--annotation-dir`: the labels of `coco_pope_<split>.json` are given to
    that split's questions in file order, as the reference does, after checking that each pair
    names the same image.

Question file (one JSON object per line)
    `question_id`; `image`; `text`; `label` or `answer` ("yes" / "no"; not needed with an
    annotation folder); optional `category`.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from types import MappingProxyType
from typing import Any

from llavakit.eval.files import SHORT_ANSWER_INSTRUCTION, match_answers, percent, read_records
from llavakit.eval.protocols import Protocol, choose
from llavakit.eval.yesno import parse_yes_no, pope_official, yes_no_label

PROTOCOLS = MappingProxyType(
    {
        "official": Protocol("official", "haotian-liu/LLaVA llava/eval/eval_pope.py"),
        "lenient": Protocol("lenient", "llavakit's yes/no reader (yesno.parse_yes_no)"),
    }
)
_READERS = MappingProxyType({"official": pope_official, "lenient": parse_yes_no})
SPLITS = ("adversarial", "popular", "random")
_ANNOTATION_NAME = "coco_pope_{}.json"


def binary_metrics(truths: list[str], predictions: list[str | None]) -> dict[str, float]:
    """f1 (the headline, first), accuracy, precision, recall and yes_ratio (%) of yes/no
    predictions."""
    true_pos = sum(t == "yes" and p == "yes" for t, p in zip(truths, predictions))
    predicted_yes = sum(p == "yes" for p in predictions)
    truly_yes = sum(t == "yes" for t in truths)
    right = sum(t == p for t, p in zip(truths, predictions))
    precision = percent(true_pos, predicted_yes) or 0.0
    recall = percent(true_pos, truly_yes) or 0.0
    return {
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "accuracy": percent(right, len(truths)) or 0.0,
        "precision": precision,
        "recall": recall,
        "yes_ratio": percent(predicted_yes, len(truths)) or 0.0,
    }


def score_pope(
    questions: str | os.PathLike,
    answers: str | os.PathLike,
    *,
    protocol: str | None = None,
    annotation_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """POPE metrics per split and their means; labels from the question file or `annotation_dir`."""
    chosen = choose(PROTOCOLS, protocol, "POPE")
    read = _READERS[chosen.name]
    matched = match_answers(questions, answers)
    labels = (
        labels_from_annotations([q for q, _ in matched.pairs], annotation_dir, questions)
        if annotation_dir is not None
        else None
    )
    by_category: dict[str, tuple[list[str], list[str | None]]] = defaultdict(lambda: ([], []))
    items = []
    for question, answer in matched.pairs:
        question_id = str(question["question_id"])
        truth = (
            labels[question_id]
            if labels
            else yes_no_label(question, ("label", "answer"), questions)
        )
        prediction = read(answer["text"]) if answer else None
        category = str(question.get("category", "all"))
        by_category[category][0].append(truth)
        by_category[category][1].append(prediction)
        items.append(
            {
                "question_id": question_id,
                "category": category,
                "prediction": prediction,
                "answer": truth,
                "correct": prediction == truth,
                "missing": answer is None,
            }
        )
    categories = {
        name: {**binary_metrics(*pairs), "n_questions": len(pairs[0])}
        for name, pairs in sorted(by_category.items())
    }
    names = ("f1", "accuracy", "precision", "recall", "yes_ratio")
    return {
        "task": "pope",
        "benchmark": "POPE",
        **chosen.stamp(),
        **matched.summary(),
        "metrics": {n: sum(c[n] for c in categories.values()) / len(categories) for n in names},
        "metrics_are": f"means over the {len(categories)} split(s): {', '.join(categories)}",
        "categories": categories,
        "n_unparsed": sum(1 for i in items if i["prediction"] is None and not i["missing"]),
        "items": items,
    }


def labels_from_annotations(
    questions: list[dict[str, Any]], annotation_dir: str | os.PathLike, questions_path: Any
) -> dict[str, str]:
    """Question id → label, giving each split's labels to its questions in file order."""
    folder = Path(annotation_dir)
    by_split: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for question in questions:
        split = question.get("category")
        if not isinstance(split, str):
            raise ValueError(
                f"{questions_path}: question {question.get('question_id')!r} has no 'category' "
                "(the POPE split) to find its label in the annotation folder"
            )
        by_split[split].append(question)
    labels = {}
    for split, members in by_split.items():
        path = folder / _ANNOTATION_NAME.format(split)
        annotations = read_records(path)
        if len(annotations) != len(members):
            raise ValueError(
                f"{path}: {len(annotations)} labels for the {len(members)} {split!r} questions "
                f"of {questions_path}"
            )
        for index, (question, annotation) in enumerate(zip(members, annotations), start=1):
            if annotation.get("image") != question.get("image"):
                raise ValueError(
                    f"{path}: record {index} is about image {annotation.get('image')!r} but the "
                    f"{index}th {split!r} question ({question.get('question_id')!r}) is about "
                    f"{question.get('image')!r}; the files are not in the same order"
                )
            labels[str(question["question_id"])] = yes_no_label(annotation, ("label",), path)
    return labels


def prepare_questions(
    annotation_dir: str | os.PathLike, instruction: str = SHORT_ANSWER_INSTRUCTION
) -> list[dict[str, Any]]:
    """One question file from `coco_pope_<split>.json` for each split present in the folder."""
    folder = Path(annotation_dir)
    records = []
    for split in SPLITS:
        path = folder / _ANNOTATION_NAME.format(split)
        if not path.is_file():
            continue
        for index, record in enumerate(read_records(path), start=1):
            text = record.get("text")
            if not isinstance(text, str) or "question_id" not in record:
                raise ValueError(f"{path}: record {index} needs 'question_id' and 'text'")
            records.append(
                {
                    "question_id": f"{split}/{record['question_id']}",
                    "image": record.get("image"),
                    "text": f"{text}\n{instruction}" if instruction else text,
                    "label": yes_no_label(record, ("label",), path),
                    "category": split,
                }
            )
    if not records:
        names = ", ".join(_ANNOTATION_NAME.format(s) for s in SPLITS)
        raise ValueError(f"{folder}: none of {names} found")
    return records
