"""LLaVA-Bench (COCO and In-the-Wild): a text-only teacher judges answers against a reference.

The judge (any `Teacher`; in practice `llavakit.datagen.teacher.OpenAITeacher` with a strong
model) sees the image's textual context, the question, the reference answer (written by a
text-only model from that context) as Assistant 1 and the candidate as Assistant 2, and writes
the two scores (1–10) on its first line, e.g. "8 7", then its reasons. Per category
(conversation / detail / complex) and overall: relative score = Σ candidate / Σ reference × 100
over the judged questions. A reply whose first line is not two scores is asked again (see
`llavakit.eval.judge`) and after `max_attempts` counted as a failure, listed with its replies and
left out of the sums — never scored 0. A question the model did not answer is not judged and is
reported as missing.

Getting the data
    From the LLaVA release on the Hugging Face hub (datasets `liuhaotian/llava-bench-in-the-wild`
    and the COCO variant in LLaVA's evaluation bundle): `questions.jsonl`, `answers_gpt4.jsonl`
    (the reference answers), `context.jsonl`, `images/`.

        llavakit eval answer --questions questions.jsonl --image-folder images ...
        llavakit eval score llava_bench --questions questions.jsonl --answers answers.jsonl \\
            --references answers_gpt4.jsonl --context context.jsonl --base-url ... --model ...

Files (one JSON object per line)
    questions: `question_id`, `image`, `text`, `category` ("conv" | "detail" | "complex"; the
    long names work too), optional `context` (overrides the context file);
    references: `question_id`, `text`;
    context: `image` (matching the questions' `image`) with `caption` (a string) or `captions`
    (a list), optionally `instances` (a list of `{"category", "bbox": [x1, y1, x2, y2]}`).
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from llavakit.datagen.protocol import Teacher, TeacherRequest
from llavakit.eval.files import match_answers, percent, read_records, require
from llavakit.eval.judge import ask_until_parsed

CATEGORIES = ("conversation", "detail", "complex")
_CATEGORY_NAMES = MappingProxyType(
    {
        "conv": "conversation",
        "conversation": "conversation",
        "detail": "detail",
        "detailed": "detail",
        "complex": "complex",
        "reasoning": "complex",
    }
)

JUDGE_SYSTEM = (
    "You review answers that AI assistants gave to questions about an image. You cannot see "
    "the image; the context describes it and is reliable. You are fair, precise and concise."
)

_SCORE_FORMAT = (
    "Give each assistant one overall score from 1 to 10, higher being better. Write the two "
    "scores alone on the first line, Assistant 1's first, separated by a space (for example "
    '"8 6"). From the second line on, explain the scores in a few sentences. Judge only the '
    "content: neither the order in which the answers appear nor their length may sway you."
)

RULES = MappingProxyType(
    {
        "conversation": (
            "Both assistants answered the user's question about the image. Rate each answer's "
            "helpfulness, relevance, accuracy with respect to the image, and level of detail. A "
            "wrong statement about the image weighs more than a missing detail. " + _SCORE_FORMAT
        ),
        "detail": (
            "Both assistants were asked to describe the image in detail. Rate how much of the "
            "image's content each description gets right — objects, their attributes, counts, "
            "positions and the scene as a whole — and penalise anything it describes that the "
            "context does not support. " + _SCORE_FORMAT
        ),
        "complex": (
            "The question needs reasoning grounded in the image. Rate whether each answer reaches "
            "a correct conclusion consistent with the image, how sound and clear its reasoning is, "
            "and how helpful it is to the user. " + _SCORE_FORMAT
        ),
    }
)
"""The judge's instructions per category, written for llavakit in the spirit of LLaVA's."""


@dataclass
class JudgeConfig:
    """How the judge is asked."""

    temperature: float = 0.2
    """Sampling temperature of the judge (LLaVA's reviews used a low one)."""
    max_tokens: int = 1024
    """Reply length limit: enough for the scores and a short explanation."""
    max_attempts: int = 3
    """Attempts per question before an unparsable reply counts as a failure."""
    seed: int = 0
    """Seed of the first attempt; each retry adds one (see `llavakit.eval.judge`)."""
    progress: bool = False
    """Show a progress bar while the judge works."""


_SCORES = re.compile(r"(\d+(?:\.\d+)?)\s*(?:,\s*|\s+)(\d+(?:\.\d+)?)")


def parse_scores(reply: str) -> tuple[float, float]:
    """(reference score, candidate score) from the judge's first line; ValueError otherwise."""
    lines = reply.strip().splitlines()
    first = lines[0].strip().strip("*`").strip() if lines else ""
    match = _SCORES.fullmatch(first)
    if not match:
        raise ValueError(f"first line {first[:80]!r} is not two scores like '8 7'")
    scores = (float(match.group(1)), float(match.group(2)))
    if not all(1 <= s <= 10 for s in scores):
        raise ValueError(f"scores {first!r} are outside 1–10")
    return scores


def validate_scores(request: TeacherRequest, reply: str) -> None:
    """Answer validator for `OpenAITeacher(validate=...)`: rejects replies without two scores on
    the first line, so the teacher asks again itself (then use `JudgeConfig(max_attempts=1)`)."""
    parse_scores(reply)


def category_name(category: str, path: Any, question_id: Any) -> str:
    """The canonical category ("conv" → "conversation")."""
    name = _CATEGORY_NAMES.get(category.strip().casefold().split()[0] if category.strip() else "")
    if name is None:
        raise ValueError(
            f"{path}: question {question_id!r}: category {category!r} is not one of "
            "'conv', 'detail', 'complex'"
        )
    return name


def render_context(record: dict[str, Any], path: Any) -> str:
    """A context record as text: caption(s), then `category: [x1, y1, x2, y2]` lines."""
    captions = record.get("captions", record.get("caption"))
    if isinstance(captions, str):
        captions = [captions]
    if (
        not isinstance(captions, list)
        or not captions
        or not all(isinstance(c, str) for c in captions)
    ):
        raise ValueError(
            f"{path}: context for image {record.get('image')!r} needs 'caption' (a string) or "
            f"'captions' (a list of strings), got {captions!r}"
        )
    lines = [c.strip() for c in captions]
    for instance in record.get("instances") or []:
        box = instance.get("bbox") if isinstance(instance, dict) else None
        numeric = isinstance(box, list) and all(isinstance(v, (int, float)) for v in box)
        if not numeric or len(box) != 4:
            raise ValueError(
                f"{path}: context for image {record.get('image')!r}: each instance needs "
                f"'category' and 'bbox' [x1, y1, x2, y2], got {instance!r}"
            )
        coordinates = ", ".join(f"{float(v):.3f}" for v in box)
        lines.append(f"{instance.get('category')}: [{coordinates}]")
    return "\n".join(lines)


def judge_messages(category: str, context: str, question: str, reference: str, candidate: str):
    """The chat messages put to the judge for one question."""
    user = (
        f"[Context]\n{context}\n\n[Question]\n{question}\n\n"
        f"[Assistant 1]\n{reference}\n[End of Assistant 1]\n\n"
        f"[Assistant 2]\n{candidate}\n[End of Assistant 2]\n\n"
        f"[Instructions]\n{RULES[category]}"
    )
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def _contexts(path: str | os.PathLike | None) -> dict[str, str]:
    if path is None:
        return {}
    contexts = {}
    for index, record in enumerate(read_records(path), start=1):
        image = record.get("image")
        if not isinstance(image, str):
            raise ValueError(f"{path}: record {index} has no 'image' to match questions by")
        contexts[image] = render_context(record, path)
    return contexts


def score_llava_bench(
    questions: str | os.PathLike,
    answers: str | os.PathLike,
    references: str | os.PathLike,
    teacher: Teacher,
    *,
    context: str | os.PathLike | None = None,
    config: JudgeConfig | None = None,
) -> dict[str, Any]:
    """Judge every answered question and sum the scores into relative scores."""
    config = config or JudgeConfig()
    matched = match_answers(questions, answers)
    reference_texts = match_answers(questions, references, what="reference answers")
    if reference_texts.missing_ids:
        raise ValueError(
            f"{references}: no reference answer for {len(reference_texts.missing_ids)} "
            f"questions, e.g. {reference_texts.missing_ids[:5]}"
        )
    contexts = _contexts(context)
    requests = []
    rows = []
    for (question, answer), (_, reference) in zip(matched.pairs, reference_texts.pairs):
        question_id = str(question["question_id"])
        category = category_name(
            require(question, "category", str, questions), questions, question_id
        )
        rows.append({"question_id": question_id, "category": category, "missing": answer is None})
        if answer is None:
            continue
        text = question.get("context")
        if not isinstance(text, str):
            text = contexts.get(str(question.get("image")))
        if text is None:
            raise ValueError(
                f"{questions}: question {question_id!r} has no context: give a context file "
                f"with an entry for image {question.get('image')!r}, or a 'context' field"
            )
        prompt = require(question, "text", str, questions)
        requests.append(
            TeacherRequest(
                key=f"llava_bench:{question_id}",
                task="judge",
                messages=judge_messages(category, text, prompt, reference["text"], answer["text"]),
                context={
                    "category": category,
                    "context": text,
                    "question": prompt,
                    "reference": reference["text"],
                    "candidate": answer["text"],
                },
                params={"temperature": config.temperature, "max_tokens": config.max_tokens},
            )
        )
    outcomes = ask_until_parsed(
        teacher,
        requests,
        lambda reply, _request: parse_scores(reply),
        max_attempts=config.max_attempts,
        base_seed=config.seed,
        progress="judging" if config.progress else None,
    )
    for row in rows:
        outcome = outcomes.get(f"llava_bench:{row['question_id']}")
        if outcome is None:
            continue
        scores = outcome.value or (None, None)
        row.update(
            reference_score=scores[0],
            candidate_score=scores[1],
            review=outcome.reply,
            attempts=outcome.attempts,
            error=outcome.error,
        )
        if not outcome.ok:
            row["replies"] = outcome.replies
    categories = _summarise(rows)
    return {
        "task": "llava_bench",
        "benchmark": "LLaVA-Bench",
        **matched.summary(),
        "judge": teacher.name,
        "metrics": {
            "overall": categories["overall"]["relative"],
            **{c: categories[c]["relative"] for c in CATEGORIES},
        },
        "categories": categories,
        "n_failed": categories["overall"]["n_failed"],
        "failures": [
            {k: row[k] for k in ("question_id", "category", "error", "replies")}
            for row in rows
            if row.get("error")
        ],
        "judge_tokens": {
            "prompt": sum(o.prompt_tokens for o in outcomes.values()),
            "completion": sum(o.completion_tokens for o in outcomes.values()),
        },
        "items": rows,
    }


def _summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Relative score, mean scores and counts per category and overall."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[row["category"]].append(row)
        groups["overall"].append(row)
    summary = {}
    for name in ("overall", *CATEGORIES):
        members = groups.get(name, [])
        scored = [r for r in members if r.get("candidate_score") is not None]
        reference_sum = sum(r["reference_score"] for r in scored)
        candidate_sum = sum(r["candidate_score"] for r in scored)
        summary[name] = {
            "relative": percent(candidate_sum, reference_sum),
            "reference_mean": reference_sum / len(scored) if scored else None,
            "candidate_mean": candidate_sum / len(scored) if scored else None,
            "n_questions": len(members),
            "n_scored": len(scored),
            "n_failed": sum(1 for r in members if r.get("error")),
            "n_missing": sum(1 for r in members if r["missing"]),
        }
    return summary
