"""The `llavakit datagen` command group."""

from __future__ import annotations

import json

import pytest

from llavakit.cli import build_parser, main


def test_group_lists_its_kinds(capsys):
    assert main(["datagen"]) == 1
    help_text = capsys.readouterr().out
    assert "llava" in help_text and "pretrain" in help_text
    argv = ["datagen", "llava", "--captions", "c", "--images", "i", "--out", "o"]
    defaults = build_parser().parse_args(argv)
    assert defaults.types == ("conversation", "detail", "complex")
    assert defaults.teacher == "openai" and defaults.concurrency == 8


def test_llm_teacher_needs_a_model(make_coco, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_MODEL", raising=False)
    paths = make_coco(n=1)
    argv = ["datagen", "llava", "--captions", str(paths["captions"]), "--images"]
    argv += [str(paths["images"]), "--out", str(paths["out"]), "--model", ""]
    assert main(argv) == 2
    assert "--model is required" in capsys.readouterr().err


def test_symbolic_teacher_option_runs_the_same_pipeline(make_coco, capsys):
    paths = make_coco(n=2)
    argv = ["datagen", "llava", "--teacher", "symbolic", "--no-progress"]
    for name in ("annotations", "captions", "images", "out"):
        argv += [f"--{name}", str(paths[name])]
    assert main(argv) == 0
    records = json.loads(paths["out"].read_text())
    assert [record["id"] for record in records] == [
        f"{image}:{task}" for image in (1, 2) for task in ("conversation", "detail", "complex")
    ]
    assert all(r["conversations"][0]["value"].startswith("<image>\n") for r in records)
    assert "6 new, 0 dropped" in capsys.readouterr().out


def test_every_teacher_verb_takes_the_same_options_and_the_old_spellings(capsys):
    datagen = ["datagen", "llava", "--captions", "c", "--images", "i", "--out", "o"]
    conversations = ["datagen", "llavar", "conversations", "--out", "o", "--no-caption"]
    judge = [
        "eval",
        "score",
        "llava_bench",
        "--references",
        "r",
        "--questions",
        "q",
        "--answers",
        "a",
    ]
    for verb in (datagen, conversations, judge):
        new = build_parser().parse_args([*verb, "--teacher-model", "t", "--answer-tries", "2"])
        old = build_parser().parse_args([*verb, "--model", "t", "--attempts", "2"])
        assert (new.teacher_model, new.answer_tries) == (old.teacher_model, old.answer_tries)
        assert (new.teacher_model, new.answer_tries, new.max_tries) == ("t", 2, 5)
    with pytest.raises(SystemExit):
        build_parser().parse_args([*datagen[:2], "--help"])
    help_text = capsys.readouterr().out
    assert "--teacher-model" in help_text and "--attempts" not in help_text
