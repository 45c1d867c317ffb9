"""ScienceQA as evaluated in the LLaVA paper: option-letter accuracy, its breakdown, the ensemble.

Getting the data
    The ScienceQA release (scienceqa.github.io; GitHub lupantech/ScienceQA, folder
    `data/scienceqa/`) provides `problems.json` (problem id → question, choices, answer index,
    hint, image, subject, grade...), `pid_splits.json` (split name → problem ids) and the
    images as `images/<split>/<pid>/image.png`. Turn them into a question file with

        llavakit eval prepare scienceqa --problems problems.json --splits pid_splits.json \\
            --split test --out scienceqa_test.jsonl
        llavakit eval answer --questions scienceqa_test.jsonl --image-folder images/test ...
        llavakit eval score scienceqa --questions scienceqa_test.jsonl --answers answers.jsonl

Question file (one JSON object per line)
    `question_id`; `image` (optional, relative to the image folder: `<pid>/image.png`);
    `text` (the prompt, see `build_prompt`); `question`; `choices` (list of option texts);
    `answer` (0-based index into choices, or the option letter); `hint` (the text context, ""
    when there is none); `subject` ("natural science" | "social science" | "language science");
    `grade` ("grade1" … "grade12").

Breakdown (the LLaVA paper's ScienceQA table): subject NAT / SOC / LAN; context modality TXT (a
text hint is given), IMG (an image is given), NO (neither) — a question with both counts in TXT
and IMG; grade G1-6 / G7-12; `accuracy` over all questions.

Reading the option letter from a reply (`extract_letter`), first rule that applies:
1. an explicit "answer is X" / "answer: X" (X an upper-case valid letter, optionally in
   parentheses); when there are several, the last, since a reasoned reply ends on its verdict;
2. the whole reply is a letter: "B", "(B)", "b", "B.";
3. the reply starts with an option marker: "B. apple", "(B) apple", "B) apple", "B: apple";
4. the reply is exactly one option's text ("apple." when B is "apple");
5. the first standalone upper-case valid letter ("B or C" → B), reading "A" followed by a
   lower-case word as the English article ("A dog sits" has no letter) unless that word is
   "is", "was", "and" or "or" ("A is correct" → A).
A reply none of these fit (including an empty one) has no letter and counts as wrong.

The ensemble (LLaVA §5.2, "GPT-4 as the judge"): a text-only teacher answers every question from
its text alone; where its letter and the model's agree, that letter stands; where one of them has
no letter, the other's stands; where they differ, the teacher is shown the question with both
replies and asked for the final letter (if that arbitration fails, the model's letter stands).
"""

from __future__ import annotations

import json
import os
import re
import string
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from llavakit.datagen.protocol import Teacher, TeacherRequest
from llavakit.eval.files import match_answers, percent, require
from llavakit.eval.judge import ask_until_parsed

ANSWER_INSTRUCTION = "Answer with the option's letter from the given choices directly."
"""The LLaVA-1.5 single-answer instruction appended to every prompt (models trained on its data
answer it with a bare letter)."""

SUBJECTS = MappingProxyType(
    {"natural science": "NAT", "social science": "SOC", "language science": "LAN"}
)
BREAKDOWN = ("NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12")


def build_prompt(
    question: str, choices: list[str], hint: str = "", instruction: str = ANSWER_INSTRUCTION
) -> str:
    """The multiple-choice prompt: context line (if any), question, lettered options, instruction.

    >>> build_prompt("Which is a fruit?", ["rock", "apple"], "Look closely.", instruction="")
    'Context: Look closely.\\nWhich is a fruit?\\nA. rock\\nB. apple'
    """
    lines = [f"Context: {hint}"] if hint.strip() else []
    lines.append(question)
    lines += [f"{letter}. {choice}" for letter, choice in zip(option_letters(choices), choices)]
    if instruction:
        lines.append(instruction)
    return "\n".join(lines)


def option_letters(choices: list[str]) -> str:
    """'AB…' with one letter per choice."""
    if not 2 <= len(choices) <= 26:
        raise ValueError(f"a multiple-choice question needs 2 to 26 choices, got {len(choices)}")
    return string.ascii_uppercase[: len(choices)]


_EXPLICIT = re.compile(r"\banswer(?:\s+is)?\s*:?\s*\(?([A-Z])\)?(?![A-Za-z0-9])", re.IGNORECASE)
_WHOLE = re.compile(r"\(?([A-Za-z])\)?[.):]?")
_MARKER = re.compile(r"(?:\(([A-Z])\)|([A-Z])[.):])\s")
_STANDALONE = re.compile(r"(?<![A-Za-z0-9'])([A-Z])(?![A-Za-z0-9'])")
_ARTICLE_FOLLOWER = re.compile(r"\s+(?!(?:is|was|and|or)\b)[a-z]")
"""After "A": a lower-case word that makes it the article ("A dog"), unless it is one of the few
words that follow a letter used as a name ("A is correct", "A or C")."""


def extract_letter(reply: str, choices: list[str]) -> str | None:
    """The option letter a reply picks, or None (rules in the module docstring)."""
    letters = option_letters(choices)
    text = unicodedata.normalize("NFKC", reply).strip()
    if not text:
        return None
    explicit = [m.group(1) for m in _EXPLICIT.finditer(text) if m.group(1) in letters]
    if explicit:
        return explicit[-1]
    whole = _WHOLE.fullmatch(text)
    if whole and whole.group(1).upper() in letters:
        return whole.group(1).upper()
    marker = _MARKER.match(text + " ")
    if marker and (marker.group(1) or marker.group(2)) in letters:
        return marker.group(1) or marker.group(2)
    bare = text.rstrip(".").strip().casefold()
    same_text = [letter for letter, c in zip(letters, choices) if c.strip().casefold() == bare]
    if len(same_text) == 1:
        return same_text[0]
    for match in _STANDALONE.finditer(text):
        letter = match.group(1)
        is_article = letter == "A" and _ARTICLE_FOLLOWER.match(text[match.end() :])
        if letter in letters and not is_article:
            return letter
    return None


@dataclass(frozen=True)
class Problem:
    """The scoring fields of one question record."""

    question_id: str
    question: str
    choices: list[str]
    answer: str
    """The correct letter."""
    hint: str
    groups: tuple[str, ...]
    """Breakdown columns this question counts in (e.g. ("NAT", "IMG", "G1-6"))."""

    @classmethod
    def from_record(cls, record: dict[str, Any], path: Any) -> Problem:
        choices = require(record, "choices", list, path)
        if not all(isinstance(c, str) for c in choices):
            raise ValueError(f"{path}: question {record['question_id']!r}: choices must be strings")
        letters = option_letters(choices)
        answer = require(record, "answer", (int, str), path)
        if isinstance(answer, int):
            if not 0 <= answer < len(choices):
                raise ValueError(
                    f"{path}: question {record['question_id']!r}: answer index {answer} is "
                    f"outside the {len(choices)} choices"
                )
            answer = letters[answer]
        elif len(answer.strip()) != 1 or answer.strip().upper() not in letters:
            raise ValueError(
                f"{path}: question {record['question_id']!r}: answer {answer!r} is not one of "
                f"the option letters {letters}"
            )
        hint = record.get("hint") or ""
        has_image = bool(record.get("image"))
        subject = require(record, "subject", str, path)
        if subject not in SUBJECTS:
            raise ValueError(
                f"{path}: question {record['question_id']!r}: subject {subject!r} is not one of "
                f"{sorted(SUBJECTS)}"
            )
        grade = require(record, "grade", str, path)
        grade_match = re.fullmatch(r"grade(\d+)", grade)
        if not grade_match or not 1 <= int(grade_match.group(1)) <= 12:
            raise ValueError(
                f"{path}: question {record['question_id']!r}: grade {grade!r} is not "
                "'grade1' … 'grade12'"
            )
        groups = [SUBJECTS[subject]]
        groups += ["TXT"] if hint.strip() else []
        groups += ["IMG"] if has_image else []
        groups += [] if hint.strip() or has_image else ["NO"]
        groups.append("G1-6" if int(grade_match.group(1)) <= 6 else "G7-12")
        return cls(
            question_id=str(record["question_id"]),
            question=require(record, "question", str, path),
            choices=choices,
            answer=answer.strip().upper(),
            hint=hint,
            groups=tuple(groups),
        )

    def prompt(self, instruction: str = ANSWER_INSTRUCTION) -> str:
        return build_prompt(self.question, self.choices, self.hint, instruction)


def accuracy_table(problems: list[Problem], predictions: list[str | None]) -> dict[str, Any]:
    """Accuracy (%) overall and per breakdown column, in the paper's column order."""
    correct: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for problem, prediction in zip(problems, predictions):
        for group in ("accuracy", *problem.groups):
            total[group] += 1
            correct[group] += prediction == problem.answer
    return {group: percent(correct[group], total[group]) for group in ("accuracy", *BREAKDOWN)}


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


def score_scienceqa(
    questions: str | os.PathLike,
    answers: str | os.PathLike,
    *,
    teacher: Teacher | None = None,
    ensemble_config: EnsembleConfig | None = None,
) -> dict[str, Any]:
    """Score an answer file; with a `teacher`, also the ensemble (as the result's variant)."""
    matched = match_answers(questions, answers)
    problems = [Problem.from_record(q, questions) for q, _ in matched.pairs]
    replies = [a["text"] if a else "" for _, a in matched.pairs]
    letters = [extract_letter(r, p.choices) for p, r in zip(problems, replies)]
    items = [
        {
            "question_id": p.question_id,
            "prediction": letter,
            "answer": p.answer,
            "correct": letter == p.answer,
            "missing": answer is None,
        }
        for p, letter, (_, answer) in zip(problems, letters, matched.pairs)
    ]
    result: dict[str, Any] = {
        "task": "scienceqa",
        "benchmark": "ScienceQA",
        **matched.summary(),
        "metrics": accuracy_table(problems, letters),
        "n_unparsed": sum(
            1 for item in items if item["prediction"] is None and not item["missing"]
        ),
        "items": items,
    }
    if teacher is not None:
        config = ensemble_config or EnsembleConfig()
        final, trace, counts = ensemble(problems, replies, letters, teacher, config)
        for item, extra in zip(items, trace):
            item.update(extra)
        result["variants"] = {
            f"+ {teacher.name} arbitration": {
                "metrics": accuracy_table(problems, final),
                "counts": counts,
            }
        }
    return result


def prepare_questions(
    problems: str | os.PathLike,
    splits: str | os.PathLike,
    split: str = "test",
    instruction: str = ANSWER_INSTRUCTION,
) -> list[dict[str, Any]]:
    """Question records for one split of the ScienceQA release, prompts included."""
    problems_by_id = _read_json_object(problems)
    split_ids = _read_json_object(splits)
    if split not in split_ids:
        raise ValueError(f"{splits}: no split {split!r}; it has {sorted(split_ids)}")
    records = []
    for pid in split_ids[split]:
        if str(pid) not in problems_by_id:
            raise ValueError(
                f"{splits}: split {split!r} names problem {pid!r}, absent from {problems}"
            )
        raw = problems_by_id[str(pid)]
        record = {
            "question_id": str(pid),
            **({"image": f"{pid}/{raw['image']}"} if raw.get("image") else {}),
            "question": raw.get("question"),
            "choices": raw.get("choices"),
            "answer": raw.get("answer"),
            "hint": raw.get("hint") or "",
            "subject": raw.get("subject"),
            "grade": raw.get("grade"),
        }
        problem = Problem.from_record(record, f"{problems} (problem {pid})")
        records.append({**record, "text": problem.prompt(instruction)})
    return records


def _read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected a JSON object keyed by problem id or split name")
    return document
