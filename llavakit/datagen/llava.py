"""LLaVA's visual instruction data pipeline: captions and boxes -> teacher -> LLaVA records.

For every image context and every requested type (conversation, detail, complex) one request is
put to a teacher (key `"{image_id}:{type}"`; messages = system + few-shot examples + the image's
textual context). Answers are parsed and checked (non-empty, alternating, no mention of captions,
boxes or coordinates), turned into LLaVA records with `<image>` at the front of the first human
turn, and appended to a journal as they arrive. The output file is written atomically from the
journal at the end, in input order. Rerunning the same command resumes: keys in the journal are
not asked again, and anything answered but not journaled comes back from the teacher's cache.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from llavakit.conversation import IMAGE_TOKEN
from llavakit.datagen.answers import find_leak, parse_pairs, parse_paragraph
from llavakit.datagen.coco import context_text, load_coco_contexts
from llavakit.datagen.journal import Journal, write_records
from llavakit.datagen.prompts import TaskPrompt, draw_question, load_question_pool, load_task_prompt
from llavakit.teacher_protocol import Teacher, TeacherRequest

if TYPE_CHECKING:
    from llavakit.datagen.teacher import TeacherConfig

TASKS = ("conversation", "detail", "complex")
"""Response types of LLaVA-Instruct, in the order records are written for each image."""


def parse_answer(task: str, text: str) -> list[tuple[str | None, str]]:
    """(question, answer) pairs of a teacher answer; raises ValueError saying what is wrong.

    A description comes back as `[(None, paragraph)]`: its question is drawn from our pool of
    detailed-description questions when the record is built.
    """
    pairs: list[tuple[str | None, str]]
    if task == "detail":
        pairs = [(None, parse_paragraph(text))]
    elif task == "conversation":
        pairs = list(parse_pairs(text))
    elif task == "complex":
        pairs = list(parse_pairs(text))
        if len(pairs) != 1:
            raise ValueError(f"expected one question and answer, got {len(pairs)}")
    else:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    for _, answer in pairs:
        leak = find_leak(answer)
        if leak:
            raise ValueError(f"answer mentions {leak!r}")
    return pairs


def check_answer(request: TeacherRequest, text: str) -> None:
    """Validator for `OpenAITeacher(validate=...)`: a rejected answer is asked again."""
    parse_answer(request.task, text)


def to_record(
    key: str, file_name: str, pairs: list[tuple[str | None, str]], detail_question: str
) -> dict[str, Any]:
    """A LLaVA record; `<image>` leads the first human turn; None questions get `detail_question`."""
    conversations = []
    for index, (question, answer) in enumerate(pairs):
        question = detail_question if question is None else question
        if index == 0:
            question = f"{IMAGE_TOKEN}\n{question}"
        conversations.append({"from": "human", "value": question})
        conversations.append({"from": "gpt", "value": answer})
    return {"id": key, "image": file_name, "conversations": conversations}


def request_key(context: dict[str, Any], task: str) -> str:
    return f"{context['image_id']}:{task}"


def build_request(
    context: dict[str, Any], task: str, prompt: TaskPrompt, params: dict[str, Any]
) -> TeacherRequest:
    return TeacherRequest(
        key=request_key(context, task),
        task=task,
        messages=prompt.messages(context_text(context)),
        context=context,
        params=dict(params),
    )


def journal_path(out: Path) -> Path:
    """Where a run keeps its progress: `<out stem>.journal.jsonl` next to the output."""
    return out.with_name(f"{out.stem}.journal.jsonl")


@dataclass
class GenerationSummary:
    """What one run of the pipeline did."""

    requested: int = 0
    """Records this command asks for (images x types)."""
    resumed: int = 0
    """Of those, already in the journal from an earlier run."""
    generated: int = 0
    """New records this run."""
    written: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    """Requests that gave no record, by reason (teacher failures and rejected answers)."""

    def text(self) -> str:
        lines = [
            f"records: {self.requested} requested, {self.resumed} already done, "
            f"{self.generated} new, {sum(self.dropped.values())} dropped, {self.written} written"
        ]
        lines += [f"  dropped {count}x: {reason}" for reason, count in self.dropped.most_common()]
        return "\n".join(lines)


def generate(
    contexts: list[dict[str, Any]],
    teacher: Teacher,
    out: Path,
    *,
    types: Iterable[str] = TASKS,
    prompts_dir: Path | None = None,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> GenerationSummary:
    """Run the pipeline for image contexts (see `coco.load_coco_contexts`) and write `out`.

    Any `Teacher` works: answers are parsed and checked here whether or not the teacher already
    validated them. Raises whatever the teacher raises for fatal errors (e.g. TeacherError);
    the journal keeps every record finished before that.
    """
    out = Path(out)
    types = tuple(types)
    for task in types:
        if task not in TASKS:
            raise ValueError(f"unknown type {task!r}; expected one of {', '.join(TASKS)}")
    prompts = {task: load_task_prompt(task, prompts_dir) for task in types}
    pool = load_question_pool("detail_questions", prompts_dir)
    params = dict(params or {})
    journal = Journal(journal_path(out))
    done = journal.load()
    wanted = [(context, task) for context in contexts for task in types]
    todo = [(context, task) for context, task in wanted if request_key(context, task) not in done]
    summary = GenerationSummary(requested=len(wanted), resumed=len(wanted) - len(todo))
    tasks_by_key = {request_key(context, task): (context, task) for context, task in todo}

    def requests() -> Iterator[TeacherRequest]:
        for context, task in todo:
            yield build_request(context, task, prompts[task], params)

    with journal, tqdm(total=len(todo), desc="teacher", unit="req", disable=not progress) as bar:
        for result in teacher.complete(requests()):
            bar.update(1)
            context, task = tasks_by_key[result.key]
            if not result.ok:
                summary.dropped[result.error or "unknown error"] += 1
                continue
            try:
                pairs = parse_answer(task, result.text or "")
            except ValueError as error:
                summary.dropped[f"invalid answer: {error}"] += 1
                continue
            question = draw_question(pool, seed, result.key)
            item = {
                "task": task,
                "teacher": teacher.name,
                "record": to_record(result.key, context["file_name"], pairs, question),
            }
            journal.append(result.key, item)
            done[result.key] = item
            summary.generated += 1

    records = [
        done[request_key(context, task)]["record"]
        for context, task in wanted
        if request_key(context, task) in done
    ]
    write_records(out, records)
    summary.written = len(records)
    return summary


@dataclass
class LlavaDatagenOptions:
    """`llavakit datagen llava`: COCO annotations in, LLaVA instruction data out."""

    captions: Path
    """COCO captions JSON (captions_train2017.json layout)."""
    out: Path
    """Output file: JSON list, or JSONL when it ends in .jsonl; progress goes to a journal beside it."""
    images: Path
    """Image folder; records name images relative to it and missing files are skipped."""
    annotations: Path | None = None
    """COCO instances JSON (boxes); without it the teacher sees captions only."""
    types: tuple[str, ...] = TASKS
    n: int | None = None
    """Use only the first N usable images (in image-id order)."""
    prompts_dir: Path | None = None
    """A folder laid out like llavakit/datagen/prompts to replace our prompts."""
    params: dict[str, Any] = field(default_factory=lambda: {"temperature": 1.0})
    """Sampling parameters sent with every request (part of the cache key)."""
    seed: int = 0
    """Seed for drawing description questions."""
    missing_images: str = "skip"
    """"skip" images whose file is missing (counted in the report) or "error" on the first one."""
    progress: bool = True


def _usable_contexts(options: LlavaDatagenOptions) -> tuple[list[dict[str, Any]], list[str]]:
    """Contexts with captions and an image file on disk, and the report lines about the rest."""
    if not options.images.is_dir():
        raise FileNotFoundError(f"{options.images}: image folder not found")
    loaded = load_coco_contexts(options.annotations, options.captions)
    contexts, missing = [], []
    for context in loaded.contexts:
        if (options.images / context["file_name"]).is_file():
            contexts.append(context)
        elif options.missing_images == "error":
            raise FileNotFoundError(
                f"{options.images / context['file_name']}: image {context['image_id']!r} "
                f"of {options.captions} not found"
            )
        else:
            missing.append(context["file_name"])
    if loaded.contexts and not contexts:
        raise FileNotFoundError(
            f"none of the {len(loaded.contexts)} images named in {options.captions} is in "
            f"{options.images} (first: {missing[0]}); is --images the right folder?"
        )
    if not contexts:
        raise ValueError(f"{options.captions}: no image has a caption")
    notes = []
    if loaded.without_captions:
        notes.append(f"skipped {len(loaded.without_captions)} images with no caption")
    if missing:
        notes.append(f"skipped {len(missing)} images missing from {options.images}")
    if options.n is not None:
        contexts = contexts[: options.n]
    return contexts, notes


def _symbolic_teacher() -> Teacher:
    try:
        from llavakit.world.teacher import SymbolicTeacher
    except ImportError as error:
        raise ValueError(
            f"--teacher symbolic needs llavakit.world.teacher.SymbolicTeacher ({error})"
        ) from error
    return SymbolicTeacher()


def run_llava_datagen(
    options: LlavaDatagenOptions, teacher_config: TeacherConfig | None = None
) -> str:
    """The `llavakit datagen llava` command; returns the report printed at the end.

    `teacher_config` is a `TeacherConfig` for the LLM teacher, or None for the synthetic
    world's symbolic teacher. The LLM teacher caches answers in `<out stem>.cache.sqlite`
    unless the config names another file.
    """
    contexts, notes = _usable_contexts(options)
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    run = {
        "types": options.types,
        "prompts_dir": options.prompts_dir,
        "params": options.params,
        "seed": options.seed,
        "progress": options.progress,
    }
    lines = [f"images: {len(contexts)} used", *notes]
    if teacher_config is None:
        summary = generate(contexts, _symbolic_teacher(), options.out, **run)
        lines.append(summary.text())
    else:
        from llavakit.datagen.teacher import OpenAITeacher

        if teacher_config.cache_path is None:
            cache = options.out.with_name(f"{options.out.stem}.cache.sqlite")
            teacher_config = replace(teacher_config, cache_path=cache)
        with OpenAITeacher(teacher_config, validate=check_answer) as teacher:
            summary = generate(contexts, teacher, options.out, **run)
            lines += [summary.text(), f"teacher {teacher.name}:", teacher.stats.summary()]
    lines.append(f"wrote {options.out}")
    return "\n".join(lines)
