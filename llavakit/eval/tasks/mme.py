"""MME (Fu et al. 2023): yes/no questions, two per image, in 14 subtasks.

Per subtask: `acc` = % of questions answered right; `acc+` = % of images whose questions are all
answered right (both of the pair); score = acc + acc+ (0–200). Perception = the sum over its
ten subtasks (max 2000), cognition over its four (max 800); a total covers the subtasks present
in the file, and the result lists any that are absent. Replies are read by
`llavakit.eval.yesno.parse_yes_no`; one with no verdict is wrong.

Getting the data
    The MME benchmark is distributed by its authors on request (GitHub BradyFU/
    Awesome-Multimodal-Large-Language-Models, "MME" section) as `MME_Benchmark_release_version/`
    with one folder per subtask. Each question file is a `.txt` named after its image, one
    question per line: `question<TAB>Yes|No`. Five subtasks keep images in `images/` and the
    text files in `questions_answers_YES_or_NO/`; the others keep both side by side. Make a
    question file with

        llavakit eval prepare mme --root MME_Benchmark_release_version --out mme.jsonl
        llavakit eval answer --questions mme.jsonl --image-folder MME_Benchmark_release_version ...

Question file (one JSON object per line)
    `question_id` (unique: `<subtask>/<image stem>/<n>`); `image`; `text`; `category` (the
    subtask, e.g. "existence", "OCR", "code_reasoning"); `answer` ("Yes" or "No").
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from types import MappingProxyType
from typing import Any

from llavakit.eval.files import match_answers, percent, require
from llavakit.eval.yesno import parse_yes_no, yes_no_label

PERCEPTION = (
    "existence",
    "count",
    "position",
    "color",
    "posters",
    "celebrity",
    "scene",
    "landmark",
    "artwork",
    "OCR",
)
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
_CANONICAL = MappingProxyType({name.casefold(): name for name in PERCEPTION + COGNITION})
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def subtask_name(category: str) -> str:
    """The canonical spelling of a subtask ("ocr" → "OCR"); unknown names are kept as given."""
    return _CANONICAL.get(category.casefold(), category)


def score_mme(questions: str | os.PathLike, answers: str | os.PathLike) -> dict[str, Any]:
    """Per-subtask acc / acc+ / score and the perception and cognition totals."""
    matched = match_answers(questions, answers)
    by_subtask: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    items = []
    for question, answer in matched.pairs:
        subtask = subtask_name(require(question, "category", str, questions))
        image = require(question, "image", str, questions)
        truth = yes_no_label(question, ("answer",), questions)
        prediction = parse_yes_no(answer["text"]) if answer else None
        correct = prediction == truth
        by_subtask[subtask][image].append(correct)
        items.append(
            {
                "question_id": str(question["question_id"]),
                "category": subtask,
                "prediction": prediction,
                "answer": truth,
                "correct": correct,
                "missing": answer is None,
            }
        )
    subtasks = {}
    for subtask, images in by_subtask.items():
        outcomes = [c for per_image in images.values() for c in per_image]
        acc = percent(sum(outcomes), len(outcomes))
        acc_plus = percent(sum(all(per_image) for per_image in images.values()), len(images))
        subtasks[subtask] = {
            "acc": acc,
            "acc_plus": acc_plus,
            "score": acc + acc_plus,
            "n_questions": len(outcomes),
            "n_images": len(images),
        }
    totals = {
        group: sum(subtasks[s]["score"] for s in names if s in subtasks)
        for group, names in (("perception", PERCEPTION), ("cognition", COGNITION))
    }
    ordered = [s for s in PERCEPTION + COGNITION if s in subtasks]
    ordered += sorted(s for s in subtasks if s not in _CANONICAL.values())
    return {
        "task": "mme",
        "benchmark": "MME",
        **matched.summary(),
        "metrics": {**totals, **{s: subtasks[s]["score"] for s in ordered}},
        "subtasks": {s: subtasks[s] for s in ordered},
        "absent_subtasks": [s for s in PERCEPTION + COGNITION if s not in subtasks],
        "unknown_subtasks": [s for s in ordered if s not in _CANONICAL.values()],
        "n_unparsed": sum(1 for i in items if i["prediction"] is None and not i["missing"]),
        "items": items,
    }


def prepare_questions(root: str | os.PathLike) -> list[dict[str, Any]]:
    """Question records from the MME release folder (layout in the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (expected MME_Benchmark_release_version)")
    records = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        split_layout = folder / "questions_answers_YES_or_NO"
        text_folder = split_layout if split_layout.is_dir() else folder
        image_folder = folder / "images" if split_layout.is_dir() else folder
        for text_file in sorted(text_folder.glob("*.txt")):
            image = _image_for(image_folder, text_file.stem)
            lines = [line for line in text_file.read_text(encoding="utf-8").splitlines() if line]
            for number, line in enumerate(lines):
                question, separator, truth = line.rpartition("\t")
                if not separator or truth.strip().casefold() not in ("yes", "no"):
                    raise ValueError(
                        f"{text_file}:{number + 1}: expected 'question<TAB>Yes' or "
                        f"'question<TAB>No', got {line!r}"
                    )
                records.append(
                    {
                        "question_id": f"{folder.name}/{text_file.stem}/{number}",
                        "image": image.relative_to(root).as_posix(),
                        "text": question.strip(),
                        "category": subtask_name(folder.name),
                        "answer": truth.strip().capitalize(),
                    }
                )
    if not records:
        raise ValueError(f"{root}: found no subtask folders with question .txt files")
    return records


def _image_for(folder: Path, stem: str) -> Path:
    for suffix in _IMAGE_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"{folder}: no image named {stem} for its question file {stem}.txt")
