"""The LLaVA paper's ScienceQA ensemble: a text-only teacher answers too, and arbitrates.

LLaVA §5.2 ("GPT-4 as the judge"): a text-only teacher answers every question from its text
alone; where its letter and the model's agree, that letter stands; where one of them has no
letter, the other's stands; where they differ, the teacher is shown the question with both
replies and asked for the final letter (if that arbitration fails, the model's letter stands).

The teacher's own replies are read with the lenient parser (`scienceqa.extract_letter`): it is
asked to end on "The answer is X." but is not the model under test. This is llavakit's
reconstruction of the procedure (our prompts, not LLaVA's `eval_science_qa_gpt4_requery.py`),
so its rows are reported under their own protocol name.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from llavakit.eval.judge import ask_until_parsed
from llavakit.eval.tasks.scienceqa import Problem, extract_letter
from llavakit.teacher_protocol import Teacher, TeacherRequest


@dataclass
class EnsembleConfig:
    """How the text-only teacher is asked in the ensemble."""

    max_attempts: int = 3
    """Attempts per teacher request before its reply counts as having no letter."""
    temperature: float = 0.0
    """Sampling temperature of the teacher's answers and arbitrations."""
    max_tokens: int = 512
    """Reply length limit of each teacher request."""
    seed: int = 0
    """Seed of the first attempt; each retry adds one (see `llavakit.eval.judge`)."""
    progress: bool = False
    """Show progress bars while the teacher answers and arbitrates."""


_TEACHER_SYSTEM = (
    "You answer multiple-choice science questions. Some questions refer to an image that you "
    "cannot see: rely on the context given and on what you know. Think step by step if it "
    'helps, then finish with a line of the form "The answer is X." where X is the letter of '
    "exactly one option."
)
_ARBITER_SYSTEM = (
    "Two assistants answered the same multiple-choice science question and disagree. The "
    "first could see the image the question may refer to; the second, like you, could not. "
    "Weigh their replies against the question and the context, decide which option is "
    'correct, and finish with a line of the form "The answer is X." where X is the letter of '
    "exactly one option."
)


def _parse_letter(reply: str, request: TeacherRequest) -> str:
    letter = extract_letter(reply, request.context["choices"])
    if letter is None:
        raise ValueError(f"no option letter in {reply[:80]!r}")
    return letter


def validate_letter(request: TeacherRequest, reply: str) -> None:
    """Answer validator for `OpenAITeacher(validate=...)`: rejects replies with no letter, so the
    teacher asks again itself (then use `EnsembleConfig(max_attempts=1)`)."""
    _parse_letter(reply, request)


def _request(
    step: str, system: str, user: str, problem: Problem, config: EnsembleConfig
) -> TeacherRequest:
    """A teacher request for one question; `step` is "answer" or "arbitrate"."""
    return TeacherRequest(
        key=f"scienceqa:{problem.question_id}:{step}",
        task=f"scienceqa_{step}",
        messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
        context={"question": problem.question, "choices": problem.choices, "hint": problem.hint},
        params={"temperature": config.temperature, "max_tokens": config.max_tokens},
    )


def _arbitration_prompt(problem: Problem, model_reply: str, teacher_reply: str) -> str:
    return (
        f"{problem.prompt(instruction='')}\n\n"
        f"Reply of the first assistant (saw the image):\n{model_reply}\n\n"
        f"Reply of the second assistant (did not see the image):\n{teacher_reply}"
    )


def ensemble(
    problems: list[Problem],
    model_replies: list[str],
    model_letters: list[str | None],
    teacher: Teacher,
    config: EnsembleConfig,
) -> tuple[list[str | None], list[dict[str, Any]], dict[str, int]]:
    """The paper's text-only-teacher ensemble: final letters, per-question trace, counts."""
    teacher_answers = ask_until_parsed(
        teacher,
        [
            _request("answer", _TEACHER_SYSTEM, p.prompt(instruction=""), p, config)
            for p in problems
        ],
        _parse_letter,
        max_attempts=config.max_attempts,
        base_seed=config.seed,
        progress="teacher answers" if config.progress else None,
    )
    teacher_letters = [teacher_answers[f"scienceqa:{p.question_id}:answer"] for p in problems]
    disputes = [
        _request(
            "arbitrate",
            _ARBITER_SYSTEM,
            _arbitration_prompt(problem, reply, theirs.reply or ""),
            problem,
            config,
        )
        for problem, reply, ours, theirs in zip(
            problems, model_replies, model_letters, teacher_letters
        )
        if ours and theirs.value and ours != theirs.value
    ]
    verdicts = ask_until_parsed(
        teacher,
        disputes,
        _parse_letter,
        max_attempts=config.max_attempts,
        base_seed=config.seed,
        progress="arbitrations" if config.progress else None,
    )
    counts: Counter[str] = Counter()
    final: list[str | None] = []
    trace: list[dict[str, Any]] = []
    for problem, ours, theirs in zip(problems, model_letters, teacher_letters):
        verdict = verdicts.get(f"scienceqa:{problem.question_id}:arbitrate")
        if verdict is None:
            chosen = ours or theirs.value
            counts[_agreement(ours, theirs.value)] += 1
        elif verdict.ok:
            chosen = verdict.value
            counts["arbitrated"] += 1
            counts[f"arbiter_chose_{_whose(chosen, ours, theirs.value)}"] += 1
        else:
            chosen = ours
            counts["arbitration_failed"] += 1
        final.append(chosen)
        trace.append(
            {
                "teacher_prediction": theirs.value,
                "teacher_error": theirs.error,
                "arbitration": None if verdict is None else verdict.value,
                "ensemble_prediction": chosen,
            }
        )
    return final, trace, dict(counts)


def _agreement(ours: str | None, theirs: str | None) -> str:
    if ours and theirs:
        return "agreed"
    if ours:
        return "model_only"
    return "teacher_only" if theirs else "neither"


def _whose(chosen: str | None, ours: str | None, theirs: str | None) -> str:
    if chosen == ours:
        return "model"
    return "teacher" if chosen == theirs else "other"
