"""POPE (Li et al. 2023): yes/no probes of object existence, hallucination measured as a
binary classification with "yes" as the positive class.

accuracy = right / all; precision = TP / predicted yes; recall = TP / truly yes; F1 their
harmonic mean; yes-ratio = predicted yes / all (a model that always says yes scores 100). All in
%, overall (micro-averaged over every question) and per `category` (POPE's random / popular /
adversarial samplings) when the file gives one. Replies are read by
`llavakit.eval.yesno.parse_yes_no`; a reply with no verdict counts as "not yes" — wrong for a
yes question (a false negative), neither right nor a false positive for a no question — and is
reported in `n_unparsed`. A ratio with nothing to divide is 0.

Getting the data
    GitHub AoiDragon/POPE (`output/coco/coco_pope_{random,popular,adversarial}.json`, JSONL
    records with `question_id`, `image`, `text`, `label`) over COCO val2014 images. A file can be
    scored as is; to score the three samplings together, concatenate them with unique question
    ids and add `"category": "random"` etc.

Question file (one JSON object per line)
    `question_id`; `image`; `text`; `label` or `answer` ("yes" / "no"); optional `category`.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

from llavakit.eval.files import match_answers, percent
from llavakit.eval.yesno import parse_yes_no, yes_no_label


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


def score_pope(questions: str | os.PathLike, answers: str | os.PathLike) -> dict[str, Any]:
    """POPE metrics overall and per category."""
    matched = match_answers(questions, answers)
    by_category: dict[str, tuple[list[str], list[str | None]]] = defaultdict(lambda: ([], []))
    items = []
    for question, answer in matched.pairs:
        truth = yes_no_label(question, ("label", "answer"), questions)
        prediction = parse_yes_no(answer["text"]) if answer else None
        category = str(question.get("category", "all"))
        by_category[category][0].append(truth)
        by_category[category][1].append(prediction)
        items.append(
            {
                "question_id": str(question["question_id"]),
                "category": category,
                "prediction": prediction,
                "answer": truth,
                "correct": prediction == truth,
                "missing": answer is None,
            }
        )
    return {
        "task": "pope",
        "benchmark": "POPE",
        **matched.summary(),
        "metrics": binary_metrics([i["answer"] for i in items], [i["prediction"] for i in items]),
        "categories": {
            name: {**binary_metrics(*pairs), "n_questions": len(pairs[0])}
            for name, pairs in sorted(by_category.items())
        },
        "n_unparsed": sum(1 for i in items if i["prediction"] is None and not i["missing"]),
        "items": items,
    }
