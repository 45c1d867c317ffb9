"""The one answer runner for every benchmark: questions in, model answers out.

Reads a LLaVA question JSONL (`question_id`, `image`, `text`, optional `category`), answers it in
batches through the inference engine, and appends one LLaVA answer record per question
(`question_id`, `prompt`, `text`, `answer_id`, `model_id`, `metadata`) to the output file as each
batch finishes. A rerun skips questions already answered (a torn last line from a killed run is
ignored and redone); `num_chunks`/`chunk_idx` split the questions into contiguous shards that
`merge_answers` joins back into one file.

A question is known by its id *and* prompt: LLaVA-1.5's TextVQA question file
(`llava_textvqa_val_v051_ocr.jsonl`) uses the image id as `question_id`, so two questions about
one image share an id and differ only in their text. Decoding is greedy unless a temperature
is given, as in the papers' evaluations.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from llavakit.eval.files import read_records
from llavakit.files import write_text_atomic


@dataclass
class AnswerSettings:
    batch_size: int = 8
    max_new_tokens: int = 128
    temperature: float = 0.0
    num_chunks: int = 1
    chunk_idx: int = 0


def chunk(items: Sequence, num_chunks: int, index: int) -> list:
    """Contiguous shard `index` of `num_chunks` (ceil-sized, as LLaVA splits)."""
    if num_chunks < 1 or not 0 <= index < num_chunks:
        raise ValueError(f"chunk index {index} is not within {num_chunks} chunk(s)")
    size = math.ceil(len(items) / num_chunks) if items else 0
    return list(items[index * size : (index + 1) * size])


def answer_key(record: dict) -> tuple[str, str | None]:
    """What names the question an answer record answers: (question id, prompt)."""
    prompt = record.get("prompt")
    return str(record["question_id"]), prompt if isinstance(prompt, str) else None


def answered_ids(path: Path) -> set[tuple[str, str | None]]:
    """Questions already in an answer file, as `answer_key`s; a torn (unparsable) last line is
    dropped from the file."""
    if not path.is_file():
        return set()
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    ids, kept = set(), []
    for number, line in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) - 1:
                break  # interrupted mid-write: redo that question
            raise ValueError(f"{path}:{number + 1}: not valid JSON; refusing to append") from None
        ids.add(answer_key(record))
        kept.append(line if line.endswith("\n") else line + "\n")
    if len(kept) != len(lines) or (lines and not lines[-1].endswith("\n")):
        path.write_text("".join(kept), encoding="utf-8")
    return ids


def answer_questions(
    engine,
    questions: list[dict],
    image_folder: Path,
    out: Path,
    settings: AnswerSettings = AnswerSettings(),
    model_id: str = "llavakit",
) -> int:
    """Answer every question of this shard not yet in `out`; returns how many were answered now."""
    from llavakit.image import load_image
    from llavakit.infer.engine import Request, SamplingParams

    params = SamplingParams(
        max_new_tokens=settings.max_new_tokens, temperature=settings.temperature
    )
    shard = chunk(questions, settings.num_chunks, settings.chunk_idx)
    done = answered_ids(out)
    todo = [
        q
        for q in shard
        if (str(q["question_id"]), q.get("text")) not in done
        and (str(q["question_id"]), None) not in done
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    with (
        out.open("a", encoding="utf-8") as sink,
        tqdm(total=len(todo), desc="answering", unit="q") as progress,
    ):
        for start in range(0, len(todo), settings.batch_size):
            batch = todo[start : start + settings.batch_size]
            requests = []
            for question in batch:
                images = []
                if question.get("image"):
                    path = image_folder / question["image"]
                    if not path.is_file():
                        raise FileNotFoundError(
                            f"question {question['question_id']}: image {path} does not exist"
                        )
                    images = [load_image(path)]
                messages = [{"role": "user", "content": question["text"]}]
                requests.append(Request(messages, images, params))
            for question, completion in zip(batch, engine.generate(requests)):
                record = {
                    "question_id": question["question_id"],
                    "prompt": question["text"],
                    "text": completion.text,
                    "answer_id": uuid.uuid4().hex,
                    "model_id": model_id,
                    "metadata": {
                        "finish_reason": completion.finish_reason,
                        "completion_tokens": completion.completion_tokens,
                    },
                }
                sink.write(json.dumps(record, ensure_ascii=False) + "\n")
            sink.flush()
            progress.update(len(batch))
    return len(todo)


def merge_answers(shards: Sequence[Path], out: Path) -> int:
    """Join shard files into one (first answer per question, see `answer_key`, wins); returns
    the count."""
    seen, lines = set(), []
    for shard in shards:
        for record in read_records(shard):
            key = answer_key(record)
            if key not in seen:
                seen.add(key)
                lines.append(json.dumps(record, ensure_ascii=False))
    write_text_atomic(out, "\n".join(lines) + ("\n" if lines else ""))
    return len(lines)
