"""MME (Fu et al. 2023): yes/no questions, two per image, in 14 subtasks.

Per subtask: `acc` = % of questions answered right; `acc+` = % of images whose questions are all
answered right (both of the pair); score = acc + acc+ (0–200). Perception = the sum over its
ten subtasks (max 2000), cognition over its four (max 800); a total covers the subtasks present
in the file, and the result lists any that are absent.

Protocols
- `official` (default): MME's `eval_tool/calculation.py` with its reader
  (`llavakit.eval.yesno.mme_official`: "yes"/"no" exactly or within the first four
  characters, else "other", which is wrong). The reference pairs each image's two lines by
  their order in the results file; we group by image, which is the same for files in order
  and right for reordered ones.
- `lenient`: llavakit's reader (`llavakit.eval.yesno.parse_yes_no`); no verdict is wrong.

Getting the data
    The MME benchmark is distributed by its authors on request (GitHub BradyFU/
    Awesome-Multimodal-Large-Language-Models, "MME" section) as `MME_Benchmark_release_version/`
    with one folder per subtask. Each question file is a `.txt` named after its image, one
    question per line: `question<TAB>Yes|No`. Five subtasks keep images in `images/` and the
    text files in `questions_answers_YN/` (or `questions_answers_YES_or_NO/`); the others keep both side by side. Make a
    question file with

        llavakit eval prepare mme --root MME_Benchmark_release_version --out mme.jsonl
        llavakit eval answer --questions mme.jsonl --image-folder MME_Benchmark_release_version ...

    `prepare` appends LLaVA-1.5's "Answer the question using a single word or phrase." on a new
    line unless told otherwise (`--instruction ""`); LLaVA-1.5's prompts carried that sentence
    (its `convert_answer_to_mme.py` strips it before matching the release's questions).

Question file (one JSON object per line)
    `question_id` (unique: `<subtask>/<image stem>/<n>`); `image`; `text`; `category` (the
    subtask, e.g. "existence", "OCR", "code_reasoning"); `answer` ("Yes" or "No").

MME's result layout (what `calculation.py` reads) scores as it is with `score_mme_results`:
one `<subtask>.txt` per subtask, one line per question, `image<TAB>question<TAB>Yes|No<TAB>reply`.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from llavakit.eval.files import SHORT_ANSWER_INSTRUCTION, match_answers, percent, require
from llavakit.eval.protocols import Protocol, choose
from llavakit.eval.yesno import mme_official, parse_yes_no, yes_no_label

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
_SPLIT_FOLDERS = ("questions_answers_YN", "questions_answers_YES_or_NO")
"""Names the release uses for a subtask's question folder when images are kept apart."""
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def subtask_name(category: str) -> str:
    """The canonical spelling of a subtask ("ocr" → "OCR"); unknown names are kept as given."""
    return _CANONICAL.get(category.casefold(), category)


PROTOCOLS = MappingProxyType(
    {
        "official": Protocol(
            "official",
            "MME eval_tool/calculation.py (BradyFU/Awesome-Multimodal-Large-Language-Models)",
        ),
        "lenient": Protocol("lenient", "llavakit's yes/no reader (yesno.parse_yes_no)"),
    }
)
_READERS = MappingProxyType({"official": mme_official, "lenient": parse_yes_no})


@dataclass(frozen=True)
class MmeItem:
    """One question to score: where it belongs, the truth, and the reply (None: unanswered)."""

    question_id: str
    subtask: str
    image: str
    truth: str
    reply: str | None


def score_mme(
    questions: str | os.PathLike, answers: str | os.PathLike, *, protocol: str | None = None
) -> dict[str, Any]:
    """Per-subtask acc / acc+ / score and the perception and cognition totals."""
    chosen = choose(PROTOCOLS, protocol, "MME")
    matched = match_answers(questions, answers)
    items = [
        MmeItem(
            question_id=str(question["question_id"]),
            subtask=subtask_name(require(question, "category", str, questions)),
            image=require(question, "image", str, questions),
            truth=yes_no_label(question, ("answer",), questions),
            reply=answer["text"] if answer else None,
        )
        for question, answer in matched.pairs
    ]
    return _score(items, chosen, matched.summary())


def score_mme_results(
    paths: list[str | os.PathLike], *, subtask: str | None = None, protocol: str | None = None
) -> dict[str, Any]:
    """Score files in MME's result layout: folders of `<subtask>.txt`, or `.txt` files named
    after their subtask (or one file with `subtask` given)."""
    chosen = choose(PROTOCOLS, protocol, "MME")
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(path.glob("*.txt"))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    if not files:
        raise ValueError(f"no MME result files (*.txt) in {', '.join(map(str, paths))}")
    if subtask is not None and len(files) != 1:
        raise ValueError(f"a subtask name applies to one result file, got {len(files)} files")
    items = []
    for file in files:
        name = subtask_name(subtask or file.stem)
        if name not in _CANONICAL.values():
            raise ValueError(
                f"{file}: {file.stem!r} is not an MME subtask; name the subtask of this file "
                f"(one of {', '.join(PERCEPTION + COGNITION)})"
            )
        items += _read_result_file(file, name)
    # The run is named after the folder of results, or the one file's name.
    given = Path(paths[0])
    label = given.stem if len(files) == 1 and given.is_file() else files[0].parent.name
    summary = {
        "model_id": label,
        "questions_file": None,
        "answers_file": ", ".join(map(str, files)),
        "n_questions": len(items),
        "n_answered": len(items),
        "n_missing": 0,
        "missing_ids": [],
    }
    return _score(items, chosen, summary)


def _read_result_file(path: Path, subtask: str) -> list[MmeItem]:
    """The lines of one `<subtask>.txt`: image, question, truth, reply (tab-separated)."""
    items = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 4:
            raise ValueError(
                f"{path}:{number}: expected 4 tab-separated fields (image, question, Yes/No, "
                f"reply), got {len(fields)}"
            )
        image, _question, truth, reply = fields
        record = {"question_id": f"{subtask}/{image}/{number}", "answer": truth}
        items.append(
            MmeItem(
                question_id=record["question_id"],
                subtask=subtask,
                image=image,
                truth=yes_no_label(record, ("answer",), f"{path}:{number}"),
                reply=reply,
            )
        )
    return items


def _score(items: list[MmeItem], protocol: Protocol, summary: dict[str, Any]) -> dict[str, Any]:
    """Verdicts under `protocol`, then acc / acc+ / score per subtask and the two totals."""
    read = _READERS[protocol.name]
    by_subtask: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    rows = []
    for item in items:
        prediction = read(item.reply) if item.reply is not None else None
        correct = prediction == item.truth
        by_subtask[item.subtask][item.image].append(correct)
        rows.append(
            {
                "question_id": item.question_id,
                "category": item.subtask,
                "prediction": prediction,
                "answer": item.truth,
                "correct": correct,
                "missing": item.reply is None,
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
        **protocol.stamp(),
        **summary,
        "metrics": {**totals, **{s: subtasks[s]["score"] for s in ordered}},
        "subtasks": {s: subtasks[s] for s in ordered},
        "absent_subtasks": [s for s in PERCEPTION + COGNITION if s not in subtasks],
        "unknown_subtasks": [s for s in ordered if s not in _CANONICAL.values()],
        "n_unparsed": sum(1 for r in rows if r["prediction"] is None and not r["missing"]),
        "items": rows,
    }


def prepare_questions(
    root: str | os.PathLike, instruction: str = SHORT_ANSWER_INSTRUCTION
) -> list[dict[str, Any]]:
    """Question records from the MME release folder (layout in the module docstring); each
    prompt is the release's question, then `instruction` on a new line (if not empty)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (expected MME_Benchmark_release_version)")
    records = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        split_layout = next((folder / n for n in _SPLIT_FOLDERS if (folder / n).is_dir()), None)
        text_folder = split_layout or folder
        image_folder = folder / "images" if split_layout else folder
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
                prompt = question.strip()
                records.append(
                    {
                        "question_id": f"{folder.name}/{text_file.stem}/{number}",
                        "image": image.relative_to(root).as_posix(),
                        "text": f"{prompt}\n{instruction}" if instruction else prompt,
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
