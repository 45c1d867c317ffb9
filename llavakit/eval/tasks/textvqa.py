"""Text-rich VQA: TextVQA, ST-VQA, OCR-VQA, DocVQA, in the two protocols papers report.

Protocols (normalisation and matching in `llavakit.eval.vqa_answers`)
- `llava15`: haotian-liu/LLaVA `llava/eval/eval_textvqa.py` + `m4c_evaluator.py`, LLaVA-1.5's
  TextVQA number: VQA accuracy (the prediction must equal a normalised human answer; min(1,
  matches/3) averaged over the 10 leave-one-out subsets of the 10 human answers). It needs 10
  human answers per question, so it applies to TextVQA only. Prompts carry the image's OCR
  tokens: `{Question}\\nReference OCR token: {t1, t2, ...}\\nAnswer the question using a single
  word or phrase.`
- `multimodalocr`: Yuliang-Liu/MultimodalOCR `eval.py` (`VQAEval`, June 2023), the protocol of
  the LLaVAR paper's table: 1 when some normalised ground-truth answer occurs in the normalised
  prediction as whole words, else 0. Prompts are the dataset's questions as they are.
- `official` (the default) is `llava15` for TextVQA and `multimodalocr` for the other three; a
  result records the protocol that actually scored it.

Getting the data
    - TextVQA: textvqa.org (`TextVQA_0.5.1_val.json`, images `train_images/`, Rosetta OCR
      tokens `TextVQA_Rosetta_OCR_v0.2_val.json`). Its annotation file is a question file as it
      is (a JSON object whose `"data"` list holds `question_id`, `question`, `image_id`,
      `answers`). Make prompts with

          llavakit eval prepare textvqa --annotations TextVQA_0.5.1_val.json \\
              --ocr TextVQA_Rosetta_OCR_v0.2_val.json --protocol llava15 --out textvqa.jsonl

      (question ids are TextVQA's; the question's first letter is upper-cased and the OCR line
      left out when an image has no tokens). LLaVA-1.5's own `llava_textvqa_val_v051_ocr.jsonl`
      works as a question file for `eval answer` as it is, and its answer files score against
      the annotation file as they are: their `question_id` is the image id, and an answer is
      matched to the question with that image id and the question text its prompt starts with
      (compared in lower case), as eval_textvqa.py matches them. If two annotations share both,
      their answers are given to them in file order (the reference would score both against
      the last one).
    - ST-VQA (rrc.cvc.uab.es, task 3), OCR-VQA (ocr-vqa.github.io), DocVQA (rrc.cvc.uab.es,
      task 1 / docvqa.org): convert to the layout below.
    - MultimodalOCR's answer files (a JSON list of `question`, `answer`, `gt_answers`, as LLaVAR
      released them) score as they are, without a question file: `score_multimodalocr_answers`.

Question file (one JSON object per line)
    `question_id`; `image`; `text` (the prompt); `answers` (list of acceptable strings) or
    `answer` (one string).
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from types import MappingProxyType
from typing import Any

from llavakit.eval.files import (
    SHORT_ANSWER_INSTRUCTION,
    MatchedAnswers,
    match_answers,
    most_common_model,
    percent,
    read_records,
    require,
)
from llavakit.eval.protocols import OFFICIAL, Protocol, choose
from llavakit.eval.vqa_answers import has_whole_answer, vqa_accuracy

BENCHMARKS = MappingProxyType(
    {
        "textvqa": "TextVQA",
        "stvqa": "ST-VQA",
        "ocrvqa": "OCR-VQA",
        "docvqa": "DocVQA",
    }
)
"""Accepted `dataset` names (lower case, no punctuation) → the name reports use."""

PROTOCOLS = MappingProxyType(
    {
        "llava15": Protocol(
            "llava15",
            "haotian-liu/LLaVA llava/eval/eval_textvqa.py + m4c_evaluator.py (VQA accuracy)",
        ),
        "multimodalocr": Protocol(
            "multimodalocr",
            "Yuliang-Liu/MultimodalOCR eval.py VQAEval (whole-answer match, as in LLaVAR)",
        ),
    }
)
OCR_TOKEN_PREFIX = "Reference OCR token: "
"""How LLaVA-1.5's TextVQA prompts introduce the image's OCR tokens (own line, after the question)."""


def benchmark_name(dataset: str) -> str:
    """The display name for a dataset name such as "textvqa", "ST-VQA" or "doc_vqa"."""
    key = "".join(ch for ch in dataset.casefold() if ch.isalnum())
    if key not in BENCHMARKS:
        raise ValueError(
            f"unknown text-VQA dataset {dataset!r}; expected one of {sorted(BENCHMARKS)}"
        )
    return BENCHMARKS[key]


def protocol_for(dataset: str, protocol: str | None) -> Protocol:
    """The protocol `protocol` names for `dataset` (`official`/None: llava15 for TextVQA,
    multimodalocr for the others)."""
    name = benchmark_name(dataset)
    if protocol in (None, OFFICIAL):
        protocol = "llava15" if name == "TextVQA" else "multimodalocr"
    return choose(PROTOCOLS, protocol, name)


def ground_truth(record: dict[str, Any], path: Any, field: str = "answers") -> list[str]:
    """The acceptable answers of a question record (`field` list, or an `answer` string)."""
    value = record.get(field, record.get("answer"))
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise ValueError(
            f"{path}: question {record.get('question_id')!r}: expected '{field}' (a list of "
            f"strings) or 'answer' (a string), got {value!r}"
        )
    if not any(a.strip() for a in value):
        raise ValueError(f"{path}: question {record.get('question_id')!r}: all answers are empty")
    return value


def score_textvqa(
    questions: str | os.PathLike,
    answers: str | os.PathLike,
    *,
    dataset: str = "textvqa",
    protocol: str | None = None,
) -> dict[str, Any]:
    """Accuracy (%) of an answer file under the dataset's protocol (module docstring)."""
    chosen = protocol_for(dataset, protocol)
    matched = match_text_vqa(questions, answers)
    items = [
        _item(str(q["question_id"]), ground_truth(q, questions), a["text"] if a else None, chosen)
        for q, a in matched.pairs
    ]
    return _result(benchmark_name(dataset), chosen, matched.summary(), items)


def score_multimodalocr_answers(
    answers: str | os.PathLike, *, dataset: str, protocol: str | None = None
) -> dict[str, Any]:
    """Score a MultimodalOCR answer file (`question`, `answer`, `gt_answers` per record) as it
    is; items are numbered in file order."""
    chosen = protocol_for(dataset, protocol)
    records = read_records(answers)
    if not records:
        raise ValueError(f"{answers}: the answer file holds no answers")
    if not all("answer" in r and "gt_answers" in r for r in records):
        raise ValueError(
            f"{answers}: not a MultimodalOCR answer file (each record needs 'answer' and "
            "'gt_answers'); to score LLaVA-layout answers, give their question file too"
        )
    items = []
    for index, record in enumerate(records, start=1):
        record = {"question_id": index, **record}
        reply = require(record, "answer", str, answers)
        items.append(_item(str(index), ground_truth(record, answers, "gt_answers"), reply, chosen))
    summary = {
        "model_id": most_common_model(records, "model_name"),
        "questions_file": None,
        "answers_file": str(answers),
        "n_questions": len(items),
        "n_answered": len(items),
        "n_missing": 0,
        "missing_ids": [],
    }
    return _result(benchmark_name(dataset), chosen, summary, items)


def _item(question_id: str, truths: list[str], reply: str | None, protocol: Protocol) -> dict:
    """One question's score (0–1) under `protocol`; a missing reply scores 0."""
    if reply is None:
        score = 0.0
    elif protocol.name == "llava15":
        if len(truths) != 10:
            raise ValueError(
                f"question {question_id}: the llava15 protocol (VQA accuracy) needs the 10 human "
                f"answers TextVQA gives each question, got {len(truths)}; use multimodalocr"
            )
        score = vqa_accuracy(reply, truths)
    else:
        score = float(has_whole_answer(reply, truths))
    return {
        "question_id": question_id,
        "prediction": reply,
        "answers": truths,
        "score": score,
        "correct": score > 0,
        "missing": reply is None,
    }


def _result(name: str, protocol: Protocol, summary: dict, items: list[dict]) -> dict[str, Any]:
    return {
        "task": "textvqa",
        "benchmark": name,
        **protocol.stamp(),
        **summary,
        "metrics": {"accuracy": percent(sum(i["score"] for i in items), len(items))},
        "items": items,
    }


def match_text_vqa(questions: str | os.PathLike, answers: str | os.PathLike) -> MatchedAnswers:
    """Pair questions and answers by question id, or, for LLaVA-1.5's answer layout against
    the TextVQA annotation file, by (image id, question text of the prompt)."""
    question_records = read_records(questions)
    answer_records = read_records(answers)
    question_ids = {str(q.get("question_id")) for q in question_records}
    by_id = all(str(a.get("question_id")) in question_ids for a in answer_records)
    if by_id or not all("image_id" in q for q in question_records):
        return match_answers(questions, answers)
    slots: dict[tuple[str, str], list[str]] = defaultdict(list)
    for question in question_records:
        text = require(question, "question", str, questions)
        slots[(str(question["image_id"]), text.lower())].append(str(question["question_id"]))
    answer_of: dict[str, dict] = {}
    for index, answer in enumerate(answer_records, start=1):
        prompt = require(answer, "prompt", str, answers)
        require(answer, "text", str, answers)
        key = (str(answer.get("question_id")), question_from_prompt(prompt, answers, index))
        if not slots.get(key):
            raise ValueError(
                f"{answers}: answer {index} (image {key[0]!r}, question {key[1]!r}) matches no "
                f"question of {questions}, or more answers than questions match it"
            )
        answer_of[slots[key].pop(0)] = answer
    pairs = [(q, answer_of.get(str(q["question_id"]))) for q in question_records]
    return MatchedAnswers(
        questions_path=str(questions),
        answers_path=str(answers),
        pairs=pairs,
        missing_ids=[str(q["question_id"]) for q, a in pairs if a is None],
        model_id=most_common_model(answer_records),
    )


_SHORT_ANSWER_LAYOUT = re.compile(r"Question: (.*?) Short answer:", re.DOTALL)


def question_from_prompt(prompt: str, path: Any, index: int) -> str:
    """The question a LLaVA TextVQA prompt asks, lower-cased (eval_textvqa.py's layouts)."""
    lines = prompt.split("\n")
    if prompt.startswith("OCR tokens: "):
        match = _SHORT_ANSWER_LAYOUT.search(prompt)
        question = match.group(1) if match else None
    elif OCR_TOKEN_PREFIX in prompt and len(lines) == 3:
        question = lines[1] if prompt.startswith(OCR_TOKEN_PREFIX.rstrip()) else lines[0]
    elif len(lines) == 2:
        question = lines[0]
    else:
        question = None
    if question is None:
        raise ValueError(
            f"{path}: answer {index}: cannot find the question in its prompt {prompt[:80]!r}; "
            "expected 'question\\nReference OCR token: ...\\ninstruction' or 'question\\n"
            "instruction'"
        )
    return question.lower()


def prepare_questions(
    annotations: str | os.PathLike,
    ocr: str | os.PathLike | None = None,
    protocol: str = "llava15",
) -> list[dict[str, Any]]:
    """Question records from TextVQA's annotation file with the prompts of `protocol`."""
    chosen = protocol_for("textvqa", protocol)
    tokens_of: dict[str, list[str]] = {}
    if ocr is not None:
        for index, entry in enumerate(read_records(ocr), start=1):
            tokens = entry.get("ocr_tokens")
            if "image_id" not in entry or not isinstance(tokens, list):
                raise ValueError(f"{ocr}: record {index} needs 'image_id' and 'ocr_tokens'")
            tokens_of[str(entry["image_id"])] = [str(t) for t in tokens]
    records = []
    for index, entry in enumerate(read_records(annotations), start=1):
        question = require({"question_id": index, **entry}, "question", str, annotations)
        if "image_id" not in entry or "question_id" not in entry:
            raise ValueError(f"{annotations}: record {index} needs 'question_id' and 'image_id'")
        image_id = str(entry["image_id"])
        if chosen.name == "llava15":
            lines = [question[:1].upper() + question[1:]]
            tokens = tokens_of.get(image_id, entry.get("ocr_tokens") or [])
            if tokens:
                lines.append(OCR_TOKEN_PREFIX + ", ".join(map(str, tokens)))
            text = "\n".join([*lines, SHORT_ANSWER_INSTRUCTION])
        else:
            text = question
        records.append(
            {
                "question_id": entry["question_id"],
                "image": f"{image_id}.jpg",
                "image_id": image_id,
                "question": question,
                "text": text,
                "answers": ground_truth(entry, annotations),
            }
        )
    return records
