"""The synthetic world's benchmark: held-out questions with exact answers, by category.

The world (`llavakit world ...`, `llavakit demo`) writes the question file for its eval split;
no download is involved. Categories: existence, colour, counting, position, reading
(reading_small for deliberately small text), detail. Whether a reply is right is decided by the
world itself,
`llavakit.world.benchmark.score_answer(category, answer, prediction)`, which returns a bool or a
fraction in [0, 1] (e.g. the share of annotated objects a detailed description mentions); a
missing answer scores 0. Metrics are the mean score in % overall (over questions) and per
category.

Question file (one JSON object per line)
    `question_id`; `image`; `text`; `category`; `answer` (the exact answer, a string; for
    "detail" the list of object names a description should mention). The world writes it:
    `llavakit.world.benchmark.write_benchmark(world_dir, out_path)`.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from llavakit.eval.files import match_answers, percent, require
from llavakit.eval.protocols import Protocol

ScoreAnswer = Callable[[str, "str | list[str]", str], "bool | float"]
PROTOCOL = Protocol("official", "the world's own verdicts (llavakit.world.benchmark.score_answer)")
"""The world benchmark has one protocol: llavakit defines the benchmark and its scoring."""
CATEGORIES = ("existence", "colour", "counting", "position", "reading", "reading_small", "detail")
"""Report order; categories the file has beyond these follow alphabetically."""


def score_world(
    questions: str | os.PathLike,
    answers: str | os.PathLike,
    *,
    score_answer: ScoreAnswer | None = None,
) -> dict[str, Any]:
    """Mean score (%) overall and per category; `score_answer` defaults to the world's own."""
    if score_answer is None:
        from llavakit.world.benchmark import score_answer as world_score_answer

        score_answer = world_score_answer
    matched = match_answers(questions, answers)
    totals: dict[str, list[float]] = defaultdict(list)
    items = []
    for question, answer in matched.pairs:
        category = require(question, "category", str, questions)
        truth = require(question, "answer", (str, list), questions)
        prediction = answer["text"] if answer else ""
        score = float(score_answer(category, truth, prediction)) if answer else 0.0
        if not 0.0 <= score <= 1.0:
            raise ValueError(
                f"score_answer gave {score} for question {question['question_id']!r}; "
                "expected a value in [0, 1]"
            )
        totals[category].append(score)
        items.append(
            {
                "question_id": str(question["question_id"]),
                "category": category,
                "prediction": prediction,
                "answer": truth,
                "score": score,
                "missing": answer is None,
            }
        )
    all_scores = [s for scores in totals.values() for s in scores]
    order = [c for c in CATEGORIES if c in totals] + sorted(set(totals) - set(CATEGORIES))
    return {
        "task": "world",
        "benchmark": "World",
        **PROTOCOL.stamp(),
        **matched.summary(),
        "metrics": {
            "accuracy": percent(sum(all_scores), len(all_scores)),
            **{c: percent(sum(totals[c]), len(totals[c])) for c in order},
        },
        "n_questions_by_category": {c: len(totals[c]) for c in order},
        "items": items,
    }
