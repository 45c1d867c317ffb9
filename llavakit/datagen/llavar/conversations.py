"""`llavakit datagen llavar conversations`: LLaVAR's OCR-grounded conversations from a teacher.

For each text-rich image the text-only teacher is told (LLaVAR §3.2):
- what OCR read, line by line in reading order, from one or more engines (LLaVAR: PaddleOCR and
  EasyOCR); it is asked to trust the OCR over the caption;
- a caption of the image with its text masked out: the OCR boxes are painted over with OpenCV's
  Telea inpainting before captioning, so the caption describes the visual elements instead of
  misreading the text.
Our system prompt and few-shot examples (`prompts/llavar_conversation/`) follow the paper's
rules: only questions with definite answers, some needing reasoning, never a mention of OCR or
captions. Answers come back in the `Question:/===/Answer:` format, are checked by the shared
parser and written as LLaVA records. OCR, captions and finished conversations each have a
journal, so a rerun resumes at the first unfinished step of each image.

The captioner is any function from an image to a sentence; `engine_captioner` makes one from a
llavakit checkpoint through the inference engine. A captioner that also has `caption_batch`
(a list of images to a list of sentences) and `batch_size` is given that many images at a time:
one batched generate call instead of one per image.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from llavakit.conversation import IMAGE_TOKEN
from llavakit.datagen.answers import find_leak, parse_pairs
from llavakit.datagen.journal import Journal, write_records
from llavakit.datagen.llavar.items import (
    ImageItem,
    Shard,
    gather_items,
    journal_file,
    journal_folder,
    read_journals,
)
from llavakit.datagen.llavar.ocr import OcrConfig, OcrResult, ocr_items
from llavakit.datagen.ocr import DEFAULT_MIN_CONFIDENCE
from llavakit.datagen.ocr.engines import OcrLine, confident
from llavakit.datagen.ocr.layout import merge_paragraphs
from llavakit.datagen.prompts import TaskPrompt, load_task_prompt
from llavakit.teacher_protocol import Teacher, TeacherRequest

if TYPE_CHECKING:
    from llavakit.datagen.teacher import TeacherConfig

TASK = "llavar_conversation"
Captioner = Callable[[Image.Image], str]
"""Writes one caption for an image (here: an image whose text was painted over)."""
CAPTION_PROMPT = "Describe the image briefly."
INPAINT_MAX_SIDE = 768
"""Images are inpainted at most this large: captioners look at a few hundred pixels anyway."""
_OCR_MENTION = re.compile(r"\b(OCR|optical character recognition|text recognition)\b", re.I)


# ---- masking the text ----------------------------------------------------------------------------
def mask_text(image: Image.Image, lines: Sequence[OcrLine], margin: float = 0.2) -> Image.Image:
    """`image` (shrunk to INPAINT_MAX_SIDE) with the OCR boxes, grown by `margin` x the line
    height, filled in from their surroundings by Telea inpainting."""
    import cv2

    rgb = image.convert("RGB")
    scale = min(1.0, INPAINT_MAX_SIDE / max(rgb.size))
    if scale < 1.0:
        rgb = rgb.resize(
            (round(rgb.width * scale), round(rgb.height * scale)), Image.Resampling.LANCZOS
        )
    if not lines:
        return rgb
    mask = np.zeros((rgb.height, rgb.width), np.uint8)  # (H, W), 255 = paint over
    for line in lines:
        corners = np.asarray(line.box, dtype=np.float32) * scale  # (4, 2)
        center = corners.mean(axis=0)
        height = max(1.0, line.bounds[3] - line.bounds[1]) * scale
        grown = corners + np.sign(corners - center) * margin * height
        cv2.fillPoly(mask, [np.round(grown).astype(np.int32)], 255)
    bgr = np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])
    painted = cv2.inpaint(bgr, mask, 5, cv2.INPAINT_TELEA)
    return Image.fromarray(np.ascontiguousarray(painted[:, :, ::-1]))


# ---- the teacher's context ---------------------------------------------------------------------
def reading_lines(lines: Sequence[OcrLine], min_confidence: float) -> list[str]:
    """Confident line texts in reading order (paragraph by paragraph)."""
    paragraphs = merge_paragraphs(confident(lines, min_confidence))
    return [line.text for paragraph in paragraphs for line in paragraph.lines]


def build_context(
    ocr: dict[str, list[str]], caption: str, captions: Sequence[str] = ()
) -> dict[str, Any]:
    """The structured context of one request.

    `ocr` maps engine name -> line texts, first engine first. `context["ocr"]` holds the first
    engine's lines (what the symbolic world teacher reads); every engine's lines are in
    `context["ocr_engines"]`.
    """
    first = next(iter(ocr.values()), [])
    context: dict[str, Any] = {"ocr": list(first), "ocr_engines": dict(ocr), "caption": caption}
    if captions:
        context["captions"] = list(captions)
    return context


def context_text(context: dict[str, Any]) -> str:
    """The user message for one image, in the layout of the few-shot examples."""
    parts = []
    for number, lines in enumerate(context["ocr_engines"].values(), start=1):
        parts.append(f"Text in the image (pass {number}):")
        parts.extend(lines)
    parts.append("")
    for caption in [context["caption"], *context.get("captions", [])]:
        if caption:
            parts.append(f"Picture: {caption}")
    return "\n".join(parts).strip()


def build_request(
    key: str, context: dict[str, Any], prompt: TaskPrompt, params: dict[str, Any]
) -> TeacherRequest:
    return TeacherRequest(
        key=key,
        task=TASK,
        messages=prompt.messages(context_text(context)),
        context=context,
        params=dict(params),
    )


def parse_conversation(text: str) -> list[tuple[str, str]]:
    """(question, answer) pairs of a teacher answer; ValueError says why it is unusable."""
    pairs = parse_pairs(text)
    for question, answer in pairs:
        for part in (question, answer):
            leak = find_leak(part)
            mention = _OCR_MENTION.search(part)
            if leak or mention:
                raise ValueError(f"mentions {leak or mention.group(0)!r}")
    return pairs


def check_answer(request: TeacherRequest, text: str) -> None:
    """Validator for `OpenAITeacher(validate=...)`: a rejected answer is asked again."""
    parse_conversation(text)


def to_record(key: str, pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """A LLaVA record; `<image>` leads the first human turn."""
    conversations = []
    for index, (question, answer) in enumerate(pairs):
        conversations.append(
            {"from": "human", "value": (f"{IMAGE_TOKEN}\n" if index == 0 else "") + question}
        )
        conversations.append({"from": "gpt", "value": answer})
    return {"id": key, "image": key, "conversations": conversations}


# ---- captioner from a checkpoint -----------------------------------------------------------------
def engine_captioner(
    checkpoint: str | Path,
    prompt: str = CAPTION_PROMPT,
    max_new_tokens: int = 64,
    device: str = "auto",
    batch_size: int = 16,
) -> Captioner:
    """A captioner that asks a llavakit checkpoint `prompt` about each image (greedy), up to
    `batch_size` images per generate call."""
    from llavakit.infer.engine import Engine

    return EngineCaptioner(
        Engine.load(checkpoint, device=device, max_batch_size=batch_size),
        prompt,
        max_new_tokens,
        batch_size,
    )


@dataclass
class EngineCaptioner:
    """Captions images with a loaded inference engine, a batch of them per generate call."""

    engine: Any
    prompt: str = CAPTION_PROMPT
    max_new_tokens: int = 64
    batch_size: int = 16

    def __call__(self, image: Image.Image) -> str:
        return self.caption_batch([image])[0]

    def caption_batch(self, images: Sequence[Image.Image]) -> list[str]:
        from llavakit.infer.engine import Request, SamplingParams

        params = SamplingParams(max_new_tokens=self.max_new_tokens, temperature=0.0)
        messages = [{"role": "user", "content": self.prompt}]
        requests = [Request(messages=messages, images=[image], params=params) for image in images]
        return [completion.text.strip() for completion in self.engine.generate(requests)]


# ---- the command ---------------------------------------------------------------------------------
@dataclass
class ConversationOptions:
    """`llavakit datagen llavar conversations`."""

    out: Path
    """Output: a JSON list, or JSONL when the name ends in .jsonl; progress in `<stem>.journal/`."""
    images: Path | None = None
    lists: tuple[Path, ...] = ()
    ocr: OcrConfig = field(default_factory=OcrConfig)
    """Settings of the first OCR engine."""
    extra_engines: tuple[str, ...] = ()
    """More OCR engines whose lines the teacher also sees (LLaVAR used two), e.g. ("tesseract",)."""
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    captioner_name: str = "captioner"
    """Recorded with each caption; a caption by another captioner is made again."""
    prompts_dir: Path | None = None
    """A folder with a replacement `llavar_conversation/` prompt."""
    params: dict[str, Any] = field(default_factory=lambda: {"temperature": 1.0})
    """Sampling parameters of every request (LLaVAR: temperature 1.0)."""
    shard: Shard = field(default_factory=Shard)
    workers: int = 1
    progress: bool = True


@dataclass
class ConversationSummary:
    images: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    """Images not sent to the teacher, by reason."""
    resumed: int = 0
    generated: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    """Requests that gave no record, by reason."""
    written: int = 0

    def text(self) -> str:
        lines = [
            f"images: {self.images}, skipped {sum(self.skipped.values())}, conversations: "
            f"{self.resumed} already done, {self.generated} new, "
            f"{sum(self.dropped.values())} dropped, {self.written} written"
        ]
        lines += [f"  skipped {n}x: {reason}" for reason, n in self.skipped.most_common()]
        lines += [f"  dropped {n}x: {reason}" for reason, n in self.dropped.most_common()]
        return "\n".join(lines)


def _captions(
    items: Sequence[ImageItem],
    ocr: dict[str, OcrResult],
    captioner: Captioner,
    options: ConversationOptions,
    folder: Path,
) -> dict[str, str]:
    """Caption of every item's text-masked image, journaled as they are made."""
    from llavakit.image import load_image

    journal = Journal(journal_file(folder, "caption", options.shard))
    journal.load()
    captions = {
        key: entry["caption"]
        for key, entry in read_journals(folder, "caption").items()
        if entry.get("captioner") == options.captioner_name
    }
    todo = [item for item in items if item.key not in captions]
    caption_batch = getattr(captioner, "caption_batch", None)
    size = max(1, getattr(captioner, "batch_size", 1)) if caption_batch else 1
    with (
        journal,
        tqdm(total=len(todo), desc="caption", unit="img", disable=not options.progress) as bar,
    ):
        for start in range(0, len(todo), size):
            chunk = todo[start : start + size]
            masked = []
            for item in chunk:
                image = load_image(item.path, max_pixels=options.ocr.max_pixels)
                masked.append(mask_text(image, ocr[item.key].lines))
            written = caption_batch(masked) if caption_batch else [captioner(masked[0])]
            if len(written) != len(chunk):
                raise RuntimeError(
                    f"captioner returned {len(written)} captions for {len(chunk)} images"
                )
            for item, caption in zip(chunk, (text.strip() for text in written)):
                captions[item.key] = caption
                journal.append(item.key, {"captioner": options.captioner_name, "caption": caption})
            bar.update(len(chunk))
    return captions


def generate_conversations(
    options: ConversationOptions, captioner: Captioner, teacher: Teacher
) -> ConversationSummary:
    """Run the whole step for the images of `options` and write `options.out`."""
    prompt = load_task_prompt(TASK, options.prompts_dir)
    items = gather_items(options.images, options.lists, options.shard)
    out = Path(options.out)
    folder = journal_folder(out)
    summary = ConversationSummary(images=len(items))
    engines = {
        options.ocr.engine: ocr_items(
            items, options.ocr, folder, options.shard, options.workers, options.progress
        )
    }
    for name in options.extra_engines:
        config = OcrConfig(name, options.ocr.short_edge, options.ocr.max_pixels)
        engines[name] = ocr_items(
            items,
            config,
            folder,
            options.shard,
            options.workers,
            options.progress,
            step=f"ocr_{name}",
        )
    primary = engines[options.ocr.engine]
    texts: dict[str, dict[str, list[str]]] = {}
    usable = []
    for item in items:
        if primary[item.key].error is not None:
            summary.skipped["unreadable image"] += 1
            continue
        lines = {
            name: reading_lines(results[item.key].lines, options.min_confidence)
            for name, results in engines.items()
        }
        if not lines[options.ocr.engine]:
            summary.skipped["no confident text"] += 1
            continue
        texts[item.key] = lines
        usable.append(item)

    journal = Journal(journal_file(folder, "conversation", options.shard))
    journal.load()
    done = read_journals(folder, "conversation")
    todo = [item for item in usable if item.key not in done]
    summary.resumed = len(usable) - len(todo)
    captions = _captions(todo, primary, captioner, options, folder)

    def requests() -> Iterator[TeacherRequest]:
        for item in todo:
            extra = (item.listed or {}).get("captions") or []
            context = build_context(
                texts[item.key], captions[item.key], [c for c in extra if isinstance(c, str)]
            )
            yield build_request(item.key, context, prompt, options.params)

    with (
        journal,
        tqdm(total=len(todo), desc="teacher", unit="req", disable=not options.progress) as bar,
    ):
        for result in teacher.complete(requests()):
            bar.update(1)
            if not result.ok:
                summary.dropped[result.error or "unknown error"] += 1
                continue
            try:
                pairs = parse_conversation(result.text or "")
            except ValueError as error:
                summary.dropped[f"invalid answer: {error}"] += 1
                continue
            entry = {"teacher": teacher.name, "record": to_record(result.key, pairs)}
            journal.append(result.key, entry)
            done[result.key] = entry
            summary.generated += 1
    records = [done[item.key]["record"] for item in usable if item.key in done]
    write_records(options.shard.output(out), records)
    summary.written = len(records)
    return summary


def run_conversations(
    options: ConversationOptions, captioner: Captioner, teacher_config: TeacherConfig | None
) -> str:
    """The conversations command; `teacher_config` None means the synthetic world's symbolic
    teacher. The LLM teacher caches answers in `<out stem>.cache.sqlite` unless told otherwise."""
    target = options.shard.output(Path(options.out))
    if teacher_config is None:
        from llavakit.world.teacher import SymbolicTeacher

        summary = generate_conversations(options, captioner, SymbolicTeacher())
        return f"{summary.text()}\nwrote {target}"
    from dataclasses import replace

    from llavakit.datagen.teacher import OpenAITeacher

    if teacher_config.cache_path is None:
        out = Path(options.out)
        teacher_config = replace(
            teacher_config, cache_path=out.with_name(f"{out.stem}.cache.sqlite")
        )
    with OpenAITeacher(teacher_config, validate=check_answer) as teacher:
        summary = generate_conversations(options, captioner, teacher)
        stats = teacher.stats.summary()
    return f"{summary.text()}\nteacher {teacher.name}:\n{stats}\nwrote {target}"
