"""Question and answer files shared by every scorer.

Layout (the LLaVA evaluation convention, one JSON object per line):

- a **question file** holds one record per question with a unique `question_id`, the `image`
  (relative to an image folder), the prompt `text` and whatever ground truth the task needs
  (`answer`, `answers`, `label`, `category`...; each scorer documents its fields). A JSON list,
  or an object with a `"data"` list (the TextVQA annotation layout), is read the same way.
- an **answer file** (written by `llavakit eval answer`) holds one record per answered question:
  `question_id`, `prompt`, `text` (the model's reply), `answer_id`, `model_id`, `metadata`.

Question ids are compared as text, so `34602` and `"34602"` name the same question. Scoring is
done over every question of the question file: a question without an answer is *missing* and
counts as wrong (a partial run must not look better than a full one); an answer whose id is not
in the question file means the two files do not belong together and is an error.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llavakit.files import write_text_atomic

SHORT_ANSWER_INSTRUCTION = "Answer the question using a single word or phrase."
"""LLaVA-1.5's evaluation instruction for VQA-style benchmarks, on its own line after the
question (TextVQA, POPE, MME...); `prepare` commands append it."""

MAX_IDS_SHOWN = 20
"""How many ids an error message or a result lists before eliding the rest."""


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read JSONL, a JSON list, or a JSON object with a `"data"` list, as a list of objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    records = _parse_document(path, text)
    if records is None:
        records = []
        for line_number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_number}: not valid JSON ({error.msg})") from None
    for index, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise ValueError(
                f"{path}: record {index} is {type(record).__name__}, expected an object"
            )
    return records


def _parse_document(path: Path, text: str) -> list[Any] | None:
    """Records of a whole-file JSON document, or None when the text is JSONL.

    A file that parses as one JSON value is a document: a list of records, an object holding
    them under "data", or a single record (a one-line JSONL file).
    """
    if not text.lstrip().startswith(("[", "{")):
        return None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        if text.lstrip().startswith("["):
            raise ValueError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
        return None  # JSONL: parsed line by line so that errors name the line
    if isinstance(document, dict):
        return document["data"] if isinstance(document.get("data"), list) else [document]
    return document if isinstance(document, list) else None


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """One JSON document; a clear error naming the file (and line) when it is absent or bad."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None


def question_key(record: dict[str, Any], path: str | os.PathLike, index: int) -> str:
    """The record's `question_id` as text; a clear error when it is absent."""
    value = record.get("question_id")
    if value is None or isinstance(value, (dict, list, bool)) or str(value) == "":
        raise ValueError(
            f"{path}: record {index} has no usable 'question_id' (got {value!r}); "
            "every question and answer needs one"
        )
    return str(value)


def index_by_id(records: list[dict[str, Any]], path: str | os.PathLike) -> dict[str, dict]:
    """Map question id → record, refusing duplicate ids (they would make matching ambiguous)."""
    indexed: dict[str, dict] = {}
    duplicates: list[str] = []
    for index, record in enumerate(records, start=1):
        key = question_key(record, path, index)
        if key in indexed:
            duplicates.append(key)
        indexed[key] = record
    if duplicates:
        raise ValueError(
            f"{path}: {len(duplicates)} question ids occur more than once: {_some(duplicates)}"
        )
    return indexed


@dataclass
class MatchedAnswers:
    """Every question of a question file paired with its answer (None when missing)."""

    questions_path: str
    answers_path: str
    pairs: list[tuple[dict[str, Any], dict[str, Any] | None]]
    """(question, answer) in question-file order."""
    missing_ids: list[str]
    """Ids of questions with no answer."""
    model_id: str | None
    """The answers' `model_id` (the most frequent one when several occur)."""

    def summary(self) -> dict[str, Any]:
        """The fields every result dict starts with."""
        return {
            "model_id": self.model_id,
            "questions_file": self.questions_path,
            "answers_file": self.answers_path,
            "n_questions": len(self.pairs),
            "n_answered": len(self.pairs) - len(self.missing_ids),
            "n_missing": len(self.missing_ids),
            "missing_ids": self.missing_ids[:MAX_IDS_SHOWN],
        }


def match_answers(
    questions: str | os.PathLike, answers: str | os.PathLike, *, what: str = "answers"
) -> MatchedAnswers:
    """Pair each question with its answer by `question_id`.

    Raises ValueError when an answer names a question id the question file does not have, when
    an id is answered twice, or when an answer has no string `text`. `what` names the answer
    file's role in messages ("answers", "reference answers").
    """
    question_records = read_records(questions)
    if not question_records:
        raise ValueError(f"{questions}: the question file holds no questions")
    index_by_id(question_records, questions)
    answer_records = read_records(answers)
    answers_by_id = index_by_id(answer_records, answers)
    question_ids = {question_key(q, questions, i) for i, q in enumerate(question_records, 1)}
    unknown = [key for key in answers_by_id if key not in question_ids]
    if unknown:
        raise ValueError(
            f"{answers}: {len(unknown)} {what} have question ids that are not in {questions}: "
            f"{_some(unknown)}; are these {what} for another question file?"
        )
    for key, answer in answers_by_id.items():
        if not isinstance(answer.get("text"), str):
            raise ValueError(
                f"{answers}: question {key}: field 'text' must be a string, "
                f"got {answer.get('text')!r}"
            )
    pairs = []
    missing = []
    for index, question in enumerate(question_records, start=1):
        key = question_key(question, questions, index)
        pairs.append((question, answers_by_id.get(key)))
        if key not in answers_by_id:
            missing.append(key)
    return MatchedAnswers(
        questions_path=str(questions),
        answers_path=str(answers),
        pairs=pairs,
        missing_ids=missing,
        model_id=most_common_model(answer_records),
    )


def most_common_model(answers: list[dict[str, Any]], field: str = "model_id") -> str | None:
    """The model an answer file belongs to: its most frequent `field` value, if any."""
    names = Counter(a[field] for a in answers if isinstance(a.get(field), str))
    return names.most_common(1)[0][0] if names else None


def require(record: dict[str, Any], field: str, kind: type | tuple[type, ...], path: Any) -> Any:
    """`record[field]` checked against `kind`; the error names the file, question and field."""
    value = record.get(field)
    kinds = _as_tuple(kind)
    wrong_bool = isinstance(value, bool) and bool not in kinds  # True is an int to isinstance
    if wrong_bool or not isinstance(value, kinds):
        expected = " or ".join(t.__name__ for t in kinds)
        raise ValueError(
            f"{path}: question {record.get('question_id')!r}: field '{field}' must be "
            f"{expected}, got {value!r}"
        )
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def percent(numerator: float, denominator: float) -> float | None:
    """100 × numerator / denominator, None when there is nothing to divide by."""
    return 100.0 * numerator / denominator if denominator else None


def write_results(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a result dict as indented JSON (atomically, creating parent folders)."""
    text = json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    return write_text_atomic(path, text, make_parents=True)


def _some(ids: list[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:MAX_IDS_SHOWN])
    return shown + (f" and {len(ids) - MAX_IDS_SHOWN} more" if len(ids) > MAX_IDS_SHOWN else "")


def write_jsonl(records: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write records as JSONL atomically (temp file + rename), creating parent folders."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return write_text_atomic(path, text, make_parents=True)
