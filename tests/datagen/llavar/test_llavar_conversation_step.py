"""OCR-grounded conversations: text masking, the teacher's context, parsing, records, resume."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest
from llavar_images import render_lines
from PIL import Image

from llavakit.datagen.llavar.conversations import (
    ConversationOptions,
    build_context,
    build_request,
    context_text,
    generate_conversations,
    mask_text,
    parse_conversation,
)
from llavakit.datagen.ocr.engines import confident, make_engine, read_image
from llavakit.datagen.prompts import load_task_prompt
from llavakit.teacher_protocol import TeacherRequest, TeacherResult
from llavakit.world.teacher import SymbolicTeacher


class RecordingTeacher:
    """The symbolic world teacher, keeping the requests it was asked."""

    def __init__(self) -> None:
        self.inner = SymbolicTeacher()
        self.name = self.inner.name
        self.requests: list[TeacherRequest] = []

    def complete(self, requests: Iterable[TeacherRequest]) -> Iterator[TeacherResult]:
        for request in requests:
            self.requests.append(request)
            yield from self.inner.complete([request])


class RecordingCaptioner:
    def __init__(self) -> None:
        self.images: list[Image.Image] = []

    def __call__(self, image: Image.Image) -> str:
        self.images.append(image)
        return "a pale poster with a plain background"


def test_masking_paints_the_text_out_and_leaves_the_rest():
    rendered = render_lines(
        ["CLOSED SUNDAY", "sorry for the trouble"], size=(420, 260), px=26, origin=(30, 40)
    )
    engine = make_engine("rapidocr")
    lines = read_image(rendered.image, engine)
    masked = mask_text(rendered.image, lines)
    assert masked.size == rendered.image.size
    assert confident(read_image(masked, engine), 0.5) == []
    before, after = np.asarray(rendered.image), np.asarray(masked)
    assert (before[200:, :] == after[200:, :]).all()  # far from the text: untouched
    assert mask_text(rendered.image, []).size == rendered.image.size


def test_context_and_messages_follow_the_prompt_files():
    context = build_context(
        {"rapidocr": ["OPEN", "late"], "tesseract": ["OPEN", "1ate"]},
        "a shop window",
        ["a neon sign"],
    )
    assert context["ocr"] == ["OPEN", "late"] and context["captions"] == ["a neon sign"]
    assert context_text(context) == (
        "Text in the image (pass 1):\nOPEN\nlate\nText in the image (pass 2):\nOPEN\n1ate\n\n"
        "Picture: a shop window\nPicture: a neon sign"
    )
    prompt = load_task_prompt("llavar_conversation")
    request = build_request("a.png", context, prompt, {"temperature": 1.0})
    roles = [m["role"] for m in request.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert "never mention text recognition" in request.messages[0]["content"].lower()
    assert request.task == "llavar_conversation" and request.params == {"temperature": 1.0}
    for example in request.messages[2:5:2]:  # the few-shot answers parse with our own parser
        assert len(parse_conversation(example["content"])) == 5


def test_parser_refuses_answers_that_mention_hidden_sources():
    good = "Question:\nWhat does it say?\n===\nAnswer:\nIt says OPEN."
    assert parse_conversation(good) == [("What does it say?", "It says OPEN.")]
    with pytest.raises(ValueError, match="OCR"):
        parse_conversation("Question:\nWhat does it say?\n===\nAnswer:\nThe OCR reads OPEN.")
    with pytest.raises(ValueError, match="caption"):
        parse_conversation("Question:\nWhat is shown?\n===\nAnswer:\nThe caption says a shop.")
    with pytest.raises(ValueError):
        parse_conversation("Answer:\nno question")


def test_conversations_end_to_end_and_resume(filtered, image_folder, tmp_path):
    out = tmp_path / "conversations.json"
    options = ConversationOptions(
        out=out, lists=(filtered / "kept.jsonl",), images=image_folder, progress=False
    )
    teacher, captioner = RecordingTeacher(), RecordingCaptioner()
    summary = generate_conversations(options, captioner, teacher)
    assert (summary.generated, summary.written, sum(summary.dropped.values())) == (4, 4, 0)
    records = json.loads(out.read_text())
    assert [r["image"] for r in records] == [  # list order (sorted paths)
        "signs/text_3.png",
        "text_0.png",
        "text_1.png",
        "text_2.png",
    ]
    for record in records:
        turns = record["conversations"]
        assert record["id"] == record["image"] and len(turns) >= 4
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        assert turns[0]["value"].startswith("<image>\n") and "<image>" not in turns[2]["value"]
    request = next(r for r in teacher.requests if r.key == "text_0.png")
    assert [line.lower() for line in request.context["ocr"]] == [
        "grand opening",
        "fresh bread daily",
        "corner bakery",
    ]
    assert request.context["caption"] == "a pale poster with a plain background"
    assert request.messages[-1]["content"].startswith("Text in the image (pass 1):\n")
    assert len(captioner.images) == 4
    answer = " ".join(t["value"] for t in records[1]["conversations"]).lower()
    assert re.search(r"grand|bread|bakery", answer)

    again_teacher, again_captioner = RecordingTeacher(), RecordingCaptioner()
    summary = generate_conversations(options, again_captioner, again_teacher)
    assert (summary.resumed, summary.generated, summary.written) == (4, 0, 4)
    assert again_teacher.requests == [] and again_captioner.images == []
    assert json.loads(out.read_text()) == records


class BatchingCaptioner(RecordingCaptioner):
    batch_size = 3

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def caption_batch(self, images):
        self.batches.append(len(images))
        first = len(self.images)
        self.images.extend(images)
        return [f"caption {first + i}" for i in range(len(images))]


def test_a_batching_captioner_gets_its_batch_size_and_every_caption_is_journaled(
    filtered, image_folder, tmp_path
):
    kept = (filtered / "kept.jsonl",)
    options = ConversationOptions(
        out=tmp_path / "c.json", lists=kept, images=image_folder, progress=False
    )
    captioner, teacher = BatchingCaptioner(), RecordingTeacher()
    assert generate_conversations(options, captioner, teacher).generated == 4
    assert captioner.batches == [3, 1] and len(captioner.images) == 4
    captions = sorted(request.context["caption"] for request in teacher.requests)
    assert captions == ["caption 0", "caption 1", "caption 2", "caption 3"]


def test_the_engine_captioner_makes_one_generate_call_per_batch(tiny_checkpoint):
    from llavakit.datagen.llavar.conversations import engine_captioner

    captioner = engine_captioner(tiny_checkpoint, max_new_tokens=4, device="cpu", batch_size=3)
    images = [Image.new("RGB", (40, 40), colour) for colour in ("red", "blue", "green")]
    captions = captioner.caption_batch(images)
    assert len(captions) == 3 and all(isinstance(c, str) for c in captions)
    assert captioner.engine.batch_sizes[:] == [3]
    assert isinstance(captioner(images[0]), str)
    assert captioner.engine.batch_sizes[:] == [3, 1]


class LeakyTeacher:
    name = "leaky"

    def complete(self, requests):
        for request in requests:
            yield TeacherResult(request.key, "Question:\nWhat?\n===\nAnswer:\nThe OCR says hi.")


def test_rejected_answers_are_counted_and_asked_again_next_run(filtered, image_folder, tmp_path):
    out = tmp_path / "c.jsonl"
    options = ConversationOptions(
        out=out, lists=(filtered / "kept.jsonl",), images=image_folder, progress=False
    )
    captioner = RecordingCaptioner()
    summary = generate_conversations(options, captioner, LeakyTeacher())
    assert summary.dropped == {"invalid answer: mentions 'OCR'": 4} and out.read_text() == ""
    summary = generate_conversations(options, captioner, RecordingTeacher())
    assert summary.generated == 4 and len(captioner.images) == 4  # captions were kept


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract is not installed")
def test_a_second_engine_adds_a_second_reading(filtered, image_folder, tmp_path):
    one = tmp_path / "one.jsonl"
    one.write_text((filtered / "kept.jsonl").read_text().splitlines()[0] + "\n")
    teacher = RecordingTeacher()
    options = ConversationOptions(
        out=tmp_path / "c.json",
        lists=(one,),
        images=image_folder,
        extra_engines=("tesseract",),
        progress=False,
    )
    generate_conversations(options, RecordingCaptioner(), teacher)
    (request,) = teacher.requests
    assert list(request.context["ocr_engines"]) == ["rapidocr", "tesseract"]
    assert "Text in the image (pass 2):" in request.messages[-1]["content"]
    assert "harbour" in " ".join(request.context["ocr_engines"]["tesseract"]).lower()


def test_engine_captioner_runs_a_checkpoint(tiny_checkpoint):
    from llavakit.datagen.llavar.conversations import engine_captioner

    caption = engine_captioner(tiny_checkpoint, max_new_tokens=4, device="cpu")
    assert isinstance(caption(Image.new("RGB", (64, 48), "green")), str)


def test_cli_conversations_with_the_symbolic_teacher(filtered, image_folder, tmp_path, capsys):
    from llavakit.cli import main

    out = tmp_path / "cli.json"
    args = [
        "datagen",
        "llavar",
        "conversations",
        "--list",
        str(filtered / "kept.jsonl"),
        "--images",
        str(image_folder),
        "--out",
        str(out),
        "--teacher",
        "symbolic",
        "--no-caption",
        "--no-progress",
    ]
    assert main(args) == 0
    assert "4 written" in capsys.readouterr().out
    assert len(json.loads(Path(out).read_text())) == 4
    with pytest.raises(SystemExit) as exit_info:  # neither --captioner nor --no-caption
        main([arg for arg in args if arg != "--no-caption"])
    assert exit_info.value.code == 2


def test_llm_teacher_over_http_with_validation_and_cache(filtered, image_folder, tmp_path):
    from fake_openai import FakeOpenAIServer

    from llavakit.datagen.llavar.conversations import run_conversations
    from llavakit.datagen.teacher import TeacherConfig

    def respond(body):
        first_line = body["messages"][-1]["content"].splitlines()[1]
        if "seed" not in body:  # a first try; a refused answer is asked again with a seed
            return f"Question:\nWhat does the OCR say?\n===\nAnswer:\n{first_line}"
        return f"Question:\nWhat is the title?\n===\nAnswer:\nThe title is {first_line}."

    out = tmp_path / "llm.json"
    options = ConversationOptions(
        out=out, lists=(filtered / "kept.jsonl",), images=image_folder, progress=False
    )
    with FakeOpenAIServer(respond=respond) as server:
        config = TeacherConfig(model="fake-gpt", base_url=server.base_url, concurrency=2)
        report = run_conversations(options, RecordingCaptioner(), config)
        asked = server.request_count
    assert "4 new" in report and "4 written" in report and "teacher fake-gpt" in report
    assert asked == 8  # each first answer mentions OCR, is refused and asked again
    assert (tmp_path / "llm.cache.sqlite").is_file()
    answers = [r["conversations"][1]["value"] for r in json.loads(out.read_text())]
    assert answers[1].lower() == "the title is grand opening."
