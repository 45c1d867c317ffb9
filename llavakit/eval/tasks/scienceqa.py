"""ScienceQA as evaluated by LLaVA: option-letter accuracy, its breakdown, the official reading.

Getting the data
    The ScienceQA release (scienceqa.github.io; GitHub lupantech/ScienceQA, folder
    `data/scienceqa/`) provides `problems.json` (problem id → question, choices, answer index,
    hint, image, subject, grade...), `pid_splits.json` (split name → problem ids) and the
    images as `images/<split>/<pid>/image.png`. LLaVA-1.5 also ships its prompts as
    `llava_test_CQM-A.json` (LLaVA conversation records). Make a question file from either:

        llavakit eval prepare scienceqa --problems problems.json --splits pid_splits.json \\
            --split test --out scienceqa_test.jsonl                  # our prompt (build_prompt)
        llavakit eval prepare scienceqa --problems problems.json \\
            --llava-questions llava_test_CQM-A.json --out scienceqa_test.jsonl  # LLaVA's prompts
        llavakit eval answer --questions scienceqa_test.jsonl --image-folder images/test ...
        llavakit eval score scienceqa --questions scienceqa_test.jsonl --answers answers.jsonl

    With `--llava-questions` each prompt is LLaVA's own: the human turn without `<image>`,
    stripped, then a new line and `ANSWER_INSTRUCTION` (model_vqa_science.py with
    `--single-pred-prompt`). An answer file written by LLaVA's scripts scores as it is.

Question file (one JSON object per line)
    `question_id`; `image` (optional, relative to the image folder: `<pid>/image.png`);
    `text` (the prompt); `question`; `choices` (list of option texts); `answer` (0-based index
    into choices, or the option letter); `hint` (the text context, "" when there is none);
    `subject` ("natural science" | "social science" | "language science"); `grade`
    ("grade1" … "grade12").

Breakdown (the LLaVA paper's ScienceQA table): subject NAT / SOC / LAN; context modality TXT (a
text hint is given), IMG (an image is given), NO (neither) — a question with both counts in TXT
and IMG; grade G1-6 / G7-12; `accuracy` over all questions. LLaVA-1.5 reports IMG. The reference
counts an answer in IMG when its recorded prompt contains "<image>", which LLaVA's answer script
writes exactly for the questions that have an image; we read the question's `image` instead, so
an answer file without that marker (ours) is split the same way.

Protocols (`score_scienceqa(protocol=...)`)
- `official` (default): haotian-liu/LLaVA `llava/eval/eval_science_qa.py`. The reply, exactly
  as written, must be one of the letters A-E, or start with one of them followed by ". ", or
  contain exactly one match of the regular expression `The answer is ([A-Z]).` (capital T, any
  one character after the letter); anything else, a missing answer included, is FAILED and
  wrong. A letter counts only if it names one of the question's options (A-E only).
- `lenient`: llavakit's forgiving reader (`extract_letter`), first rule that applies:
  1. an explicit "answer is X" / "answer: X" (X an upper-case valid letter, optionally in
     parentheses); when there are several, the last, since a reasoned reply ends on its verdict;
  2. the whole reply is a letter: "B", "(B)", "b", "B.";
  3. the reply starts with an option marker: "B. apple", "(B) apple", "B) apple", "B: apple";
  4. the reply is exactly one option's text ("apple." when B is "apple");
  5. the first standalone upper-case valid letter ("B or C" → B), reading "A" followed by a
     lower-case word as the English article ("A dog sits" has no letter) unless that word is
     "is", "was", "and" or "or" ("A is correct" → A).
  A reply none of these fit (including an empty one) has no letter and counts as wrong.

The LLaVA paper's ensemble with a text-only teacher is in `scienceqa_ensemble`; with a teacher,
`score_scienceqa` adds it as a variant scored under its own protocol name.
"""

from __future__ import annotations

import os
import re
import string
import unicodedata
from collections import Counter
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from llavakit.conversation import IMAGE_TOKEN
from llavakit.eval.files import match_answers, percent, read_json, read_records, require
from llavakit.eval.protocols import Protocol, choose

if TYPE_CHECKING:
    from llavakit.eval.tasks.scienceqa_ensemble import EnsembleConfig
    from llavakit.teacher_protocol import Teacher

PROTOCOLS = MappingProxyType(
    {
        "official": Protocol("official", "haotian-liu/LLaVA llava/eval/eval_science_qa.py"),
        "lenient": Protocol(
            "lenient", "llavakit's forgiving letter reader (scienceqa.extract_letter)"
        ),
    }
)

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


OFFICIAL_OPTIONS = "ABCDE"
"""The letters the official script knows (its `--options` default); ScienceQA has at most 5."""
_THE_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")


def official_letter(reply: str) -> str | None:
    """The letter eval_science_qa.py reads from a reply, or None for its FAILED.

    >>> [official_letter(r) for r in ("B", "B. apple", "The answer is B.", "b", "(B)")]
    ['B', 'B', 'B', None, None]
    """
    if len(reply) == 1 and reply in OFFICIAL_OPTIONS:
        return reply
    if len(reply) >= 3 and reply[0] in OFFICIAL_OPTIONS and reply[1:3] == ". ":
        return reply[0]
    found = _THE_ANSWER_IS.findall(reply)
    return found[0] if len(found) == 1 else None


def official_correct(letter: str | None, problem: Problem) -> bool:
    """The official verdict: the letter names one of the problem's options and is the answer."""
    valid = OFFICIAL_OPTIONS[: len(problem.choices)]
    return letter is not None and letter in valid and letter == problem.answer


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


def accuracy_table(problems: list[Problem], verdicts: list[bool]) -> dict[str, Any]:
    """Accuracy (%) overall and per breakdown column, in the paper's column order."""
    correct: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for problem, right in zip(problems, verdicts):
        for group in ("accuracy", *problem.groups):
            total[group] += 1
            correct[group] += right
    return {group: percent(correct[group], total[group]) for group in ("accuracy", *BREAKDOWN)}


def score_scienceqa(
    questions: str | os.PathLike,
    answers: str | os.PathLike,
    *,
    protocol: str | None = None,
    teacher: Teacher | None = None,
    ensemble_config: EnsembleConfig | None = None,
) -> dict[str, Any]:
    """Score an answer file under `protocol` (default `official`); with a `teacher`, also the
    LLaVA paper's ensemble (as the result's variant)."""
    chosen = choose(PROTOCOLS, protocol, "ScienceQA")
    matched = match_answers(questions, answers)
    problems = [Problem.from_record(q, questions) for q, _ in matched.pairs]
    replies = [a["text"] if a else None for _, a in matched.pairs]
    if chosen.name == "official":
        letters = [None if r is None else official_letter(r) for r in replies]
        verdicts = [official_correct(letter, p) for letter, p in zip(letters, problems)]
    else:
        letters = [
            None if r is None else extract_letter(r, p.choices) for r, p in zip(replies, problems)
        ]
        verdicts = [letter == p.answer for letter, p in zip(letters, problems)]
    items = [
        {
            "question_id": p.question_id,
            "prediction": letter,
            "answer": p.answer,
            "correct": correct,
            "missing": reply is None,
        }
        for p, letter, correct, reply in zip(problems, letters, verdicts, replies)
    ]
    result: dict[str, Any] = {
        "task": "scienceqa",
        "benchmark": "ScienceQA",
        **chosen.stamp(),
        **matched.summary(),
        "metrics": accuracy_table(problems, verdicts),
        "n_unparsed": sum(1 for i in items if i["prediction"] is None and not i["missing"]),
        "items": items,
    }
    if teacher is not None:
        from llavakit.eval.tasks.scienceqa_ensemble import EnsembleConfig, ensemble

        config = ensemble_config or EnsembleConfig()
        final, trace, counts = ensemble(
            problems, [r or "" for r in replies], letters, teacher, config
        )
        for item, extra in zip(items, trace):
            item.update(extra)
        name = f"{chosen.name} + {teacher.name} arbitration"
        result["variants"] = {
            f"+ {teacher.name} arbitration": {
                "protocol": name,
                "protocol_reference": "llavakit's reconstruction of the LLaVA paper's "
                f"text-only-teacher ensemble over {chosen.name} letters (scienceqa_ensemble)",
                "metrics": accuracy_table(
                    problems, [f == p.answer for f, p in zip(final, problems)]
                ),
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
    """Question records for one split of the ScienceQA release, our prompts (`build_prompt`)."""
    problems_by_id = _read_json_object(problems)
    split_ids = _read_json_object(splits)
    if split not in split_ids:
        raise ValueError(f"{splits}: no split {split!r}; it has {sorted(split_ids)}")
    records = []
    for pid in split_ids[split]:
        record = _problem_record(problems_by_id, str(pid), problems, f"{splits} split {split!r}")
        problem = Problem.from_record(record, f"{problems} (problem {pid})")
        records.append({**record, "text": problem.prompt(instruction)})
    return records


def prepare_from_llava(
    llava_questions: str | os.PathLike,
    problems: str | os.PathLike,
    instruction: str = ANSWER_INSTRUCTION,
) -> list[dict[str, Any]]:
    """Question records whose prompts are LLaVA's own (`llava_test_CQM-A.json`), ground truth
    from `problems.json`: the first human turn without "<image>", stripped, + "\n" + instruction.
    """
    problems_by_id = _read_json_object(problems)
    records = []
    for index, entry in enumerate(read_records(llava_questions), start=1):
        pid = entry.get("id")
        turns = entry.get("conversations")
        first = turns[0] if isinstance(turns, list) and turns else None
        if not isinstance(pid, (str, int)) or not isinstance(first, dict):
            raise ValueError(
                f"{llava_questions}: record {index} is not a LLaVA question record "
                "(needs 'id' and 'conversations' with a first human turn)"
            )
        value = require(first, "value", str, llava_questions)
        record = _problem_record(problems_by_id, str(pid), problems, str(llava_questions))
        if isinstance(entry.get("image"), str):
            record["image"] = entry["image"]
        Problem.from_record(record, f"{problems} (problem {pid})")
        prompt = value.replace(IMAGE_TOKEN, "").strip()
        records.append({**record, "text": f"{prompt}\n{instruction}" if instruction else prompt})
    return records


def _problem_record(
    problems_by_id: dict[str, Any], pid: str, problems: Any, named_by: str
) -> dict[str, Any]:
    """Our question record (without prompt) for one problem of problems.json."""
    if pid not in problems_by_id:
        raise ValueError(f"{named_by} names problem {pid!r}, absent from {problems}")
    raw = problems_by_id[pid]
    return {
        "question_id": pid,
        **({"image": f"{pid}/{raw['image']}"} if raw.get("image") else {}),
        "question": raw.get("question"),
        "choices": raw.get("choices"),
        "answer": raw.get("answer"),
        "hint": raw.get("hint") or "",
        "subject": raw.get("subject"),
        "grade": raw.get("grade"),
    }


def _read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    document = read_json(path)
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected a JSON object keyed by problem id or split name")
    return document
