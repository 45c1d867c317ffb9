"""The noisy step: exact LLaVA records, skipped images counted, resume after an interrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from llavar_images import render_lines, shapes_image, text_image

from llavakit.datagen.llavar import ocr as llavar_ocr
from llavakit.datagen.llavar.noisy import NoisyOptions, noisy_record, run_noisy
from llavakit.datagen.ocr.engines import OcrLine
from llavakit.datagen.prompts import draw_question, load_question_pool


def test_question_pool_has_ten_paraphrases():
    pool = load_question_pool("read_text_questions")
    assert len(pool) == 10 and len(set(pool)) == 10
    assert all(question.endswith((".", "?")) for question in pool)


def test_record_shape_is_exactly_llava():
    lines = [
        OcrLine("OPEN", ((10, 10), (60, 10), (60, 30), (10, 30)), 0.99),
        OcrLine("late", ((10, 34), (50, 34), (50, 54), (10, 54)), 0.95),
        OcrLine("Exit", ((300, 200), (340, 200), (340, 220), (300, 220)), 0.97),
        OcrLine("x%#", ((0, 300), (9, 300), (9, 309), (0, 309)), 0.2),  # noise: left out
    ]
    record = noisy_record("signs/a.png", lines, "What is written here?", 0.7)
    assert record == {
        "id": "signs/a.png",
        "image": "signs/a.png",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat is written here?"},
            {"from": "gpt", "value": "OPEN late\nExit"},
        ],
    }
    assert noisy_record("b.png", lines[3:], "What is written here?", 0.7) is None


def test_noisy_from_the_filter_list_reuses_its_ocr(filtered, image_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(llavar_ocr, "make_engine", lambda *a, **k: pytest.fail("OCR re-run"))
    out = tmp_path / "noisy.json"
    lists = (filtered / "kept.jsonl", filtered / "dropped.jsonl")
    report = run_noisy(
        NoisyOptions(out=out, lists=lists, images=image_folder, seed=3, progress=False)
    )
    assert "records 4, skipped 2 with no confident text, 1 unreadable" in report
    records = json.loads(out.read_text())
    pool = load_question_pool("read_text_questions")
    by_image = {r["image"]: r for r in records}
    assert sorted(by_image) == ["signs/text_3.png", "text_0.png", "text_1.png", "text_2.png"]
    first = by_image["text_0.png"]
    assert first["conversations"][0] == {
        "from": "human",
        "value": "<image>\n" + draw_question(pool, 3, "text_0.png"),
    }
    assert first["conversations"][1]["value"].lower() == (
        "grand opening fresh bread daily corner bakery"
    )


def make_folder(folder: Path) -> Path:
    folder.mkdir()
    for index in range(3):
        text_image(index).image.save(folder / f"sign_{index}.png")
    shapes_image(7).save(folder / "plain.png")
    render_lines(["Ok"], size=(200, 120), px=20).image.save(folder / "tiny_word.png")
    return folder


def test_resume_after_an_interrupted_run(tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "images")
    out = tmp_path / "data.json"
    options = NoisyOptions(out=out, images=folder, progress=False)
    real_read = llavar_ocr.read_image
    calls: list[int] = []

    def read_then_die(image, engine, short_edge):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user pressed ^C while the third image was read
        return real_read(image, engine, short_edge)

    monkeypatch.setattr(llavar_ocr, "read_image", read_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_noisy(options)
    assert not out.exists()
    journal = tmp_path / "data.journal" / "ocr.jsonl"
    assert len(journal.read_text().splitlines()) == 2
    with journal.open("a") as handle:
        handle.write('{"key": "sign_2.png", "image": "sign_2.p')  # and a kill mid-write

    calls.clear()
    monkeypatch.setattr(
        llavar_ocr, "read_image", lambda *args: (calls.append(1), real_read(*args))[1]
    )
    report = run_noisy(options)
    assert len(calls) == 3  # only the images not finished before
    assert "images: 5, records" in report
    records = json.loads(out.read_text())
    assert [r["image"] for r in records][:3] == ["sign_0.png", "sign_1.png", "sign_2.png"]
    assert "plain.png" not in {r["image"] for r in records}
    lines = journal.read_text().splitlines()
    assert len(lines) == 5 and all(json.loads(line)["key"] for line in lines)

    calls.clear()
    assert run_noisy(options) == report and calls == []  # a finished run does nothing new


def test_workers_give_the_same_records_as_one_process(tmp_path):
    folder = make_folder(tmp_path / "images")
    single, multi = tmp_path / "single.json", tmp_path / "multi.json"
    run_noisy(NoisyOptions(out=single, images=folder, progress=False))
    run_noisy(NoisyOptions(out=multi, images=folder, workers=2, progress=False))
    assert json.loads(single.read_text()) == json.loads(multi.read_text())


def test_cli_noisy_shards(tmp_path, capsys):
    from llavakit.cli import main

    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(2):
        text_image(index).image.save(folder / f"sign_{index}.png")
    out = tmp_path / "noisy.jsonl"
    for index in range(2):
        assert (
            main(
                [
                    "datagen",
                    "llavar",
                    "noisy",
                    "--images",
                    str(folder),
                    "--out",
                    str(out),
                    "--num-shards",
                    "2",
                    "--shard-index",
                    str(index),
                    "--no-progress",
                ]
            )
            == 0
        )
    shards = [tmp_path / f"noisy-shard{i:05d}-of00002.jsonl" for i in range(2)]
    assert [len(path.read_text().splitlines()) for path in shards] == [1, 1]
    assert (
        main(
            [
                "datagen",
                "llavar",
                "noisy",
                "--images",
                str(folder),
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    assert "records 2" in capsys.readouterr().out
    assert [json.loads(line)["image"] for line in out.read_text().splitlines()] == [
        "sign_0.png",
        "sign_1.png",
    ]
