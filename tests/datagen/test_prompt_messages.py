"""Golden test of the exact messages sent to the teacher, and prompt folders as files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from llavakit.cli import main
from llavakit.datagen.prompts import load_question_pool, load_task_prompt

GOLDEN = Path(__file__).parent / "golden"
IMAGE = {"id": 42, "file_name": "000000000042.jpg", "width": 640, "height": 480}
CONTEXT = (
    "Two zebras graze side by side in a dry field.\n"
    "A pair of zebras eating grass near some trees.\n"
    "\n"
    "zebra: [0.100, 0.250, 0.450, 0.900]\n"
    "zebra: [0.500, 0.300, 0.875, 0.917]"
)


@pytest.fixture
def zebra_coco(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 6)).save(tmp_path / "images" / IMAGE["file_name"])
    captions = [
        {"id": 1, "image_id": 42, "caption": "Two zebras graze side by side in a dry field."},
        {"id": 2, "image_id": 42, "caption": "A pair of zebras eating grass near some trees."},
    ]
    boxes = [
        {"id": 1, "image_id": 42, "category_id": 24, "bbox": [64, 120, 224, 312]},
        {"id": 2, "image_id": 42, "category_id": 24, "bbox": [320, 144, 240, 296]},
    ]
    paths = {"captions": tmp_path / "captions.json", "annotations": tmp_path / "instances.json"}
    paths["captions"].write_text(json.dumps({"images": [IMAGE], "annotations": captions}))
    paths["annotations"].write_text(
        json.dumps(
            {"images": [IMAGE], "annotations": boxes, "categories": [{"id": 24, "name": "zebra"}]}
        )
    )
    return {**paths, "images": tmp_path / "images", "out": tmp_path / "zebra.json"}


@pytest.mark.parametrize("task", ["conversation", "detail", "complex"])
def test_exact_messages_sent_for_a_fixed_annotation(fake_server, zebra_coco, task):
    argv = ["datagen", "llava", "--no-progress", "--types", task, "--model", "teacher-x"]
    argv += ["--base-url", fake_server.base_url]
    for name in ("annotations", "captions", "images", "out"):
        argv += [f"--{name}", str(zebra_coco[name])]
    assert main(argv) == 0
    [body] = fake_server.received
    assert body["model"] == "teacher-x" and body["temperature"] == 1.0
    assert body["messages"][-1] == {"role": "user", "content": CONTEXT}
    golden = json.loads((GOLDEN / f"{task}_messages.json").read_text())
    assert body["messages"] == golden
    roles = [message["role"] for message in body["messages"]]
    assert roles == ["system"] + ["user", "assistant"] * 2 + ["user"]


def test_a_prompt_folder_of_ones_own_replaces_ours(tmp_path):
    (tmp_path / "detail").mkdir()
    (tmp_path / "detail" / "system.txt").write_text("Describe.\n")
    (tmp_path / "detail" / "10_context.txt").write_text("ten")
    (tmp_path / "detail" / "10_output.txt").write_text("TEN")
    (tmp_path / "detail" / "2_context.txt").write_text("two")
    (tmp_path / "detail" / "2_output.txt").write_text("TWO")
    prompt = load_task_prompt("detail", tmp_path)
    assert prompt.messages("ctx") == [
        {"role": "system", "content": "Describe."},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "TWO"},
        {"role": "user", "content": "ten"},
        {"role": "assistant", "content": "TEN"},
        {"role": "user", "content": "ctx"},
    ]
    # no detail_questions.txt in that folder: the pool falls back to ours
    assert load_question_pool("detail_questions", tmp_path) == load_question_pool(
        "detail_questions"
    )
    (tmp_path / "detail_questions.txt").write_text("Tell all.\n\n")
    assert load_question_pool("detail_questions", tmp_path) == ("Tell all.",)


def test_broken_prompt_folders_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"conversation/system.txt: no system prompt"):
        load_task_prompt("conversation", tmp_path)
    (tmp_path / "complex").mkdir()
    (tmp_path / "complex" / "system.txt").write_text("Reason.")
    (tmp_path / "complex" / "01_context.txt").write_text("a context")
    with pytest.raises(ValueError, match=r"complex: example 01 has no 01_output.txt"):
        load_task_prompt("complex", tmp_path)
    (tmp_path / "complex" / "01_output.txt").write_text("\n")
    with pytest.raises(ValueError, match=r"01_output.txt: prompt file is empty"):
        load_task_prompt("complex", tmp_path)


def test_question_pools_have_the_papers_sizes_and_no_repeats():
    detail = load_question_pool("detail_questions")
    brief = load_question_pool("brief_questions")
    assert len(detail) == 15 and len(set(detail)) == 15
    assert len(brief) == 11 and len(set(brief)) == 11


def write_official_layout(root: Path) -> Path:
    """A prompt folder laid out like the official `playground/data/prompts/` (our own words)."""
    systems = {
        "conversation": "Write a conversation about the image.",
        "detail_description": "Write a detailed description of the image.",
        "complex_reasoning": "Ask a question that takes reasoning.",
    }
    for folder, system in systems.items():
        (root / folder).mkdir(parents=True)
        (root / folder / "system_message.txt").write_text(system + "\n")
        for number in ("000", "001"):
            (root / folder / f"{number}_caps.txt").write_text(f"{folder} context {number}\n")
            (root / folder / f"{number}_conv.txt").write_text(f"{folder} answer {number}")
    return root


def test_the_official_prompt_folder_is_read_as_it_is(fake_server, zebra_coco, tmp_path):
    prompts = write_official_layout(tmp_path / "prompts")
    argv = ["datagen", "llava", "--no-progress", "--model", "teacher-x", "--prompts", str(prompts)]
    argv += ["--base-url", fake_server.base_url]
    for name in ("annotations", "captions", "images", "out"):
        argv += [f"--{name}", str(zebra_coco[name])]
    assert main(argv) == 0
    sent = {body["messages"][0]["content"]: body["messages"] for body in fake_server.received}
    folders = {
        "Write a conversation about the image.": "conversation",
        "Write a detailed description of the image.": "detail_description",
        "Ask a question that takes reasoning.": "complex_reasoning",
    }
    assert set(sent) == set(folders)
    for system, messages in sent.items():
        folder = folders[system]
        assert messages[1:] == [
            {"role": "user", "content": f"{folder} context 000"},
            {"role": "assistant", "content": f"{folder} answer 000"},
            {"role": "user", "content": f"{folder} context 001"},
            {"role": "assistant", "content": f"{folder} answer 001"},
            {"role": "user", "content": CONTEXT},
        ]
    records = json.loads(zebra_coco["out"].read_text())
    assert len(records) == 3


def test_ambiguous_prompt_folders_are_refused(tmp_path):
    prompts = write_official_layout(tmp_path)
    (prompts / "conversation" / "system.txt").write_text("Another system prompt.")
    with pytest.raises(ValueError, match=r"conversation: both system.txt and system_message.txt"):
        load_task_prompt("conversation", prompts)
    (prompts / "conversation" / "system.txt").unlink()
    (prompts / "conversation" / "01_output.txt").write_text("An answer.")
    with pytest.raises(
        ValueError, match=r"01_output.txt: named like a llavakit example, in a folder of the off"
    ):
        load_task_prompt("conversation", prompts)
    (prompts / "detail").mkdir()
    with pytest.raises(ValueError, match=r"both detail/ and detail_description/"):
        load_task_prompt("detail", prompts)
    (prompts / "complex_reasoning" / "001_conv.txt").unlink()
    with pytest.raises(ValueError, match=r"complex_reasoning: example 001 has no 001_conv.txt"):
        load_task_prompt("complex", prompts)
