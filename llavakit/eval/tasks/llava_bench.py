"""LLaVA-Bench (COCO and In-the-Wild): a text-only LLM judge reviews answers against a reference.

The review, as haotian-liu/LLaVA `llava/eval/eval_gpt_review_bench.py` (In-the-Wild) and
`eval_gpt_review_visual.py` (COCO) ask for it: the judge's system message and, per question
category, a role and an instruction from `rule.json` (kept verbatim in
`llavakit/eval/judge_prompts/llava_bench/`, or any file in that layout); the user message is

    [Context]\\n{captions}\\n\\n[Question]\\n{question}\\n\\n[{role} 1]\\n{reference}\\n\\n
    [End of {role} 1]\\n\\n[{role} 2]\\n{candidate}\\n\\n[End of {role} 2]\\n\\n[System]\\n{rule}\\n\\n

where the context is the image's captions one per line; for COCO it is followed by a blank line
and one `category: [x1, y1, x2, y2]` line per object (the box written as Python writes a list).
The reference answer is Assistant 1. The official judge was `gpt-4-0314`, temperature 0.2, at
most 1024 tokens; the result records the judge that was used.

Scores, per category (conversation / detail / complex) and overall (`summarize_gpt_review.py`):
relative score = mean candidate score / mean reference score × 100 over the reviews.

Protocols (how a review is read)
- `official` (default): the first line with every "," turned into a space must split on single
  spaces into exactly two numbers ("8 7", "8,7"; not "8, 7", which splits into three pieces);
  otherwise the review counts as (-1, -1) and enters the means, as the reference does.
- `lenient`: llavakit's reader (`parse_scores`): two numbers in 1–10 on the first line,
  separated by spaces and/or one comma, markdown emphasis ignored; an unreadable review is
  left out of the sums and listed.
Under both, a review that does not parse may be asked again (`JudgeConfig.max_attempts`; the
reference asks once): the result counts the questions retried and those whose review still
failed, and lists the failures with every reply. A question the judge never answered (endpoint
errors) is left out and counted; one the model did not answer is not judged and is missing.

Getting the data
    From the LLaVA release on the Hugging Face hub (datasets `liuhaotian/llava-bench-in-the-wild`
    and the COCO variant in LLaVA's evaluation bundle): `questions.jsonl`, `answers_gpt4.jsonl`
    (the reference answers), `context.jsonl`, `images/`.

        llavakit eval answer --questions questions.jsonl --image-folder images ...
        llavakit eval score llava_bench --questions questions.jsonl --answers answers.jsonl \\
            --references answers_gpt4.jsonl --context context.jsonl --dataset wild \\
            --base-url ... --teacher-model ...

Files (one JSON object per line)
    questions: `question_id`, `image`, `text`, `category` ("conv" | "detail" | "complex"; the
    long names work too), optional `context` (text that replaces the context file's);
    references: `question_id`, `text`;
    context: `image` (matching the questions' `image`) with `caption` (a string) or `captions`
    (a list), and for COCO `instances` (a list of `{"category", "bbox": [x1, y1, x2, y2]}`).
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from llavakit.eval.files import match_answers, percent, read_json, read_records, require
from llavakit.eval.judge import ask_until_parsed
from llavakit.eval.protocols import Protocol, choose
from llavakit.teacher_protocol import Teacher, TeacherRequest

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
_RULE_SUFFIX = MappingProxyType({"conversation": "conv", "detail": "detail", "complex": "complex"})
PROMPTS_DIR = Path(__file__).resolve().parent.parent / "judge_prompts" / "llava_bench"
"""The official judge system message and rule.json entries, verbatim (see its README)."""


@dataclass(frozen=True)
class Variant:
    """One LLaVA-Bench data set: its report name, rule.json key prefix and context layout."""

    benchmark: str
    rule_prefix: str
    boxes: bool
    """Whether the context lists object boxes after the captions (COCO)."""


DATASETS = MappingProxyType(
    {
        "wild": Variant("LLaVA-Bench (In-the-Wild)", "llava_bench_", boxes=False),
        "coco": Variant("LLaVA-Bench (COCO)", "", boxes=True),
    }
)
PROTOCOLS = MappingProxyType(
    {
        "official": Protocol(
            "official",
            "haotian-liu/LLaVA llava/eval/eval_gpt_review_bench.py (eval_gpt_review_visual.py "
            "for COCO) + summarize_gpt_review.py, table/rule.json prompts",
        ),
        "lenient": Protocol(
            "lenient",
            "official prompts; llavakit's score reader (llava_bench.parse_scores), unreadable "
            "reviews left out",
        ),
    }
)


@dataclass
class JudgeConfig:
    """How the judge is asked."""

    temperature: float = 0.2
    """Sampling temperature of the judge (the reference's 0.2)."""
    max_tokens: int = 1024
    """Reply length limit (the reference's 1024)."""
    max_attempts: int = 1
    """Reviews per question until one parses (the reference asks once)."""
    seed: int = 0
    """Seed of the first attempt; each retry adds one (see `llavakit.eval.judge`)."""
    progress: bool = False
    """Show a progress bar while the judge works."""


@dataclass(frozen=True)
class Rules:
    """The judge's system message and the rule.json entries (key → role, instruction)."""

    system: str
    rules: dict[str, tuple[str, str]]

    @classmethod
    def load(cls, rule_file: str | os.PathLike | None = None) -> Rules:
        """Our verbatim copy, or a user's file in rule.json's layout."""
        path = Path(rule_file) if rule_file else PROMPTS_DIR / "rule.json"
        document = read_json(path, "rule file")
        rules = {}
        for key, entry in document.items() if isinstance(document, dict) else []:
            if not isinstance(entry, dict) or not all(
                isinstance(entry.get(f), str) for f in ("role", "prompt")
            ):
                raise ValueError(f"{path}: rule {key!r} needs string fields 'role' and 'prompt'")
            rules[key] = (entry["role"], entry["prompt"])
        if not rules:
            raise ValueError(f"{path}: expected a JSON object of rules like LLaVA's rule.json")
        system = (PROMPTS_DIR / "system.txt").read_text(encoding="utf-8").strip()
        return cls(system=system, rules=rules)

    def rule(self, variant: Variant, category: str) -> tuple[str, str]:
        key = variant.rule_prefix + _RULE_SUFFIX[category]
        if key not in self.rules:
            raise ValueError(f"the rule file has no rule {key!r} for {variant.benchmark}")
        return self.rules[key]


def official_scores(review: str) -> tuple[float, float]:
    """(reference, candidate) as eval_gpt_review_bench.py reads them; ValueError where it
    records (-1, -1)."""
    first_line = review.split("\n")[0]
    pieces = first_line.replace(",", " ").split(" ")
    if len(pieces) != 2:
        raise ValueError(f"first line {first_line[:80]!r} is not two scores")
    try:
        return float(pieces[0]), float(pieces[1])
    except ValueError:
        raise ValueError(f"first line {pieces!r} holds something that is not a number") from None


_SCORES = re.compile(r"(\d+(?:\.\d+)?)\s*(?:,\s*|\s+)(\d+(?:\.\d+)?)")


def parse_scores(reply: str) -> tuple[float, float]:
    """(reference, candidate) by the lenient reader; ValueError when there are none."""
    lines = reply.strip().splitlines()
    first = lines[0].strip().strip("*`").strip() if lines else ""
    match = _SCORES.fullmatch(first)
    if not match:
        raise ValueError(f"first line {first[:80]!r} is not two scores like '8 7'")
    scores = (float(match.group(1)), float(match.group(2)))
    if not all(1 <= s <= 10 for s in scores):
        raise ValueError(f"scores {first!r} are outside 1–10")
    return scores


_READERS = MappingProxyType({"official": official_scores, "lenient": parse_scores})


def category_name(category: str, path: Any, question_id: Any) -> str:
    """The canonical category ("conv" → "conversation")."""
    name = _CATEGORY_NAMES.get(category.strip().casefold().split()[0] if category.strip() else "")
    if name is None:
        raise ValueError(
            f"{path}: question {question_id!r}: category {category!r} is not one of "
            "'conv', 'detail', 'complex'"
        )
    return name


def render_context(record: dict[str, Any], path: Any, boxes: bool) -> str:
    """A context record as the reference writes it: captions, then (COCO) a blank line and
    `category: [x1, y1, x2, y2]` lines."""
    captions = record.get("captions", record.get("caption"))
    if isinstance(captions, str):
        captions = [captions]
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise ValueError(
            f"{path}: context for image {record.get('image')!r} needs 'caption' (a string) or "
            f"'captions' (a list of strings), got {captions!r}"
        )
    text = "\n".join(captions)
    if not boxes:
        return text
    lines = []
    for instance in record.get("instances") or []:
        box = instance.get("bbox") if isinstance(instance, dict) else None
        numeric = isinstance(box, list) and all(isinstance(v, (int, float)) for v in box)
        if not numeric or len(box) != 4:
            raise ValueError(
                f"{path}: context for image {record.get('image')!r}: each instance needs "
                f"'category' and 'bbox' [x1, y1, x2, y2], got {instance!r}"
            )
        lines.append(f"{instance.get('category')}: [{', '.join(repr(v) for v in box)}]")
    return f"{text}\n\n" + "\n".join(lines)


def judge_messages(
    rules: Rules, role: str, rule: str, context: str, question: str, reference: str, candidate: str
) -> list[dict[str, str]]:
    """The chat messages put to the judge for one question (layout in the module docstring)."""
    user = (
        f"[Context]\n{context}\n\n[Question]\n{question}\n\n"
        f"[{role} 1]\n{reference}\n\n[End of {role} 1]\n\n"
        f"[{role} 2]\n{candidate}\n\n[End of {role} 2]\n\n"
        f"[System]\n{rule}\n\n"
    )
    return [{"role": "system", "content": rules.system}, {"role": "user", "content": user}]


def _contexts(path: str | os.PathLike | None, boxes: bool) -> dict[str, str]:
    if path is None:
        return {}
    contexts = {}
    for index, record in enumerate(read_records(path), start=1):
        image = record.get("image")
        if not isinstance(image, str):
            raise ValueError(f"{path}: record {index} has no 'image' to match questions by")
        contexts[image] = render_context(record, path, boxes)
    return contexts


def score_llava_bench(
    questions: str | os.PathLike,
    answers: str | os.PathLike,
    references: str | os.PathLike,
    teacher: Teacher,
    *,
    context: str | os.PathLike | None = None,
    dataset: str = "wild",
    protocol: str | None = None,
    rule_file: str | os.PathLike | None = None,
    config: JudgeConfig | None = None,
) -> dict[str, Any]:
    """Judge every answered question and sum the scores into relative scores."""
    chosen = choose(PROTOCOLS, protocol, "LLaVA-Bench")
    if dataset not in DATASETS:
        raise ValueError(
            f"unknown LLaVA-Bench data set {dataset!r}; expected one of {sorted(DATASETS)}"
        )
    variant = DATASETS[dataset]
    rules = Rules.load(rule_file)
    config = config or JudgeConfig()
    matched = match_answers(questions, answers)
    reference_texts = match_answers(questions, references, what="reference answers")
    if reference_texts.missing_ids:
        raise ValueError(
            f"{references}: no reference answer for {len(reference_texts.missing_ids)} "
            f"questions, e.g. {reference_texts.missing_ids[:5]}"
        )
    contexts = _contexts(context, variant.boxes)
    requests, rows = [], []
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
        role, rule = rules.rule(variant, category)
        messages = judge_messages(
            rules, role, rule, text, prompt, reference["text"], answer["text"]
        )
        requests.append(
            TeacherRequest(
                key=f"llava_bench:{question_id}",
                task="judge",
                messages=messages,
                context={"category": category, "question": prompt},
                params={"temperature": config.temperature, "max_tokens": config.max_tokens},
            )
        )
    read = _READERS[chosen.name]
    outcomes = ask_until_parsed(
        teacher,
        requests,
        lambda reply, _request: read(reply),
        max_attempts=config.max_attempts,
        base_seed=config.seed,
        progress="judging" if config.progress else None,
    )
    for row in rows:
        outcome = outcomes.get(f"llava_bench:{row['question_id']}")
        if outcome is None:
            continue
        reviewed = bool(outcome.replies)
        scores = outcome.value
        if scores is None and reviewed and chosen.name == "official":
            scores = (-1.0, -1.0)  # what the reference records, and averages, for such a review
        row.update(
            reference_score=None if scores is None else scores[0],
            candidate_score=None if scores is None else scores[1],
            review=outcome.reply,
            attempts=outcome.attempts,
            failed=not outcome.ok and reviewed,
            unjudged=not reviewed,
            error=outcome.error,
        )
        if not outcome.ok:
            row["replies"] = outcome.replies
    categories = _summarise(rows)
    overall = categories["overall"]
    return {
        "task": "llava_bench",
        "benchmark": variant.benchmark,
        **chosen.stamp(),
        **matched.summary(),
        "judge": teacher.name,
        "judge_settings": {"temperature": config.temperature, "max_tokens": config.max_tokens},
        "metrics": {
            "overall": overall["relative"],
            **{c: categories[c]["relative"] for c in CATEGORIES},
        },
        "categories": categories,
        "n_failed": overall["n_failed"],
        "n_retried": overall["n_retried"],
        "n_unjudged": overall["n_unjudged"],
        "failures": [
            {k: row.get(k) for k in ("question_id", "category", "error", "replies")}
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
            "n_failed": sum(1 for r in members if r.get("failed")),
            "n_retried": sum(1 for r in members if r.get("attempts", 0) > 1),
            "n_unjudged": sum(1 for r in members if r.get("unjudged")),
            "n_missing": sum(1 for r in members if r["missing"]),
        }
    return summary
