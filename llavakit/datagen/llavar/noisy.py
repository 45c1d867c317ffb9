"""`llavakit datagen llavar noisy`: LLaVAR's noisy instruction data, one OCR turn per image.

Each image with confident text becomes one LLaVA record: a question drawn (by seed and image key,
so reruns agree) from our pool of paraphrases of "what text is visible in this image?"
(`prompts/read_text_questions.txt`) and, as the answer, the OCR paragraphs in reading order, one
per line. LLaVAR used 422K such records in stage 1 next to the caption data. Images with no
confident text are skipped and counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llavakit.conversation import IMAGE_TOKEN
from llavakit.datagen.journal import write_records
from llavakit.datagen.llavar.items import Shard, gather_items, journal_folder
from llavakit.datagen.llavar.ocr import OcrConfig, ocr_items
from llavakit.datagen.ocr import DEFAULT_MIN_CONFIDENCE
from llavakit.datagen.ocr.engines import OcrLine
from llavakit.datagen.ocr.layout import paragraph_texts
from llavakit.datagen.prompts import draw_question, load_question_pool

QUESTION_POOL = "read_text_questions"


@dataclass
class NoisyOptions:
    """`llavakit datagen llavar noisy`."""

    out: Path
    """Output: a JSON list, or JSONL when the name ends in .jsonl; progress in `<stem>.journal/`."""
    images: Path | None = None
    """Image folder; with `lists`, the root the listed images are under."""
    lists: tuple[Path, ...] = ()
    """JSONL image lists from `filter` or `cluster`; their OCR is reused when settings match."""
    ocr: OcrConfig = field(default_factory=OcrConfig)
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    """OCR lines below this confidence are left out of the answer."""
    seed: int = 0
    """Seed of the question draws."""
    prompts_dir: Path | None = None
    """Folder with a replacement read_text_questions.txt."""
    shard: Shard = field(default_factory=Shard)
    workers: int = 1
    progress: bool = True


def noisy_record(
    key: str, lines: Sequence[OcrLine], question: str, min_confidence: float
) -> dict[str, Any] | None:
    """The LLaVA record for one image, or None when it has no confident text."""
    answer = "\n".join(paragraph_texts(lines, min_confidence))
    if not answer:
        return None
    return {
        "id": key,
        "image": key,
        "conversations": [
            {"from": "human", "value": f"{IMAGE_TOKEN}\n{question}"},
            {"from": "gpt", "value": answer},
        ],
    }


def run_noisy(options: NoisyOptions) -> str:
    """The noisy command; returns the report printed at the end."""
    pool = load_question_pool(QUESTION_POOL, options.prompts_dir)
    items = gather_items(options.images, options.lists, options.shard)
    out = Path(options.out)
    results = ocr_items(
        items, options.ocr, journal_folder(out), options.shard, options.workers, options.progress
    )
    records, no_text, unreadable = [], 0, []
    for item in items:
        result = results[item.key]
        if result.error is not None:
            unreadable.append(result.error)
            continue
        question = draw_question(pool, options.seed, item.key)
        record = noisy_record(item.key, result.lines, question, options.min_confidence)
        if record is None:
            no_text += 1
        else:
            records.append(record)
    target = options.shard.output(out)
    write_records(target, records)
    lines = [
        f"images: {len(items)}, records {len(records)}, skipped {no_text} with no confident "
        f"text, {len(unreadable)} unreadable"
    ]
    lines += [f"  unreadable: {error}" for error in unreadable[:5]]
    lines.append(f"wrote {target}")
    return "\n".join(lines)
