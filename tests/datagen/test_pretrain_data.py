"""`llavakit datagen pretrain`: image-caption pairs -> stage-1 single-turn records."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from llavakit.cli import main
from llavakit.datagen.pretrain import read_caption_pairs
from llavakit.datagen.prompts import load_question_pool


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", "sub/c.jpg"):
        Image.new("RGB", (4, 4)).save(folder / name)
    return folder


def run(captions: Path, images: Path, out: Path, *extra: str) -> list[dict]:
    argv = ["datagen", "pretrain", "--captions", str(captions), "--images", str(images)]
    assert main([*argv, "--out", str(out), *extra]) == 0
    if out.suffix == ".jsonl":
        return [json.loads(line) for line in out.read_text().splitlines()]
    return json.loads(out.read_text())


def test_coco_captions_become_one_record_per_caption(make_coco, tmp_path, capsys):
    paths = make_coco(n=2)
    records = run(paths["captions"], paths["images"], tmp_path / "stage1.json")
    assert [record["id"] for record in records] == ["1_0", "1_1", "2_0", "2_1"]
    brief = load_question_pool("brief_questions")
    for record in records:
        human, gpt = record["conversations"]
        assert human["from"] == "human" and gpt["from"] == "gpt"
        assert human["value"].startswith("<image>\n")
        assert human["value"].removeprefix("<image>\n") in brief
    assert records[0]["image"] == "000000000001.jpg"
    assert (
        records[0]["conversations"][1]["value"]
        == "A brown dog runs across a grassy park. (image 1)"
    )
    assert "wrote 4 records" in capsys.readouterr().out


def test_question_draws_are_seeded_and_reproducible(tmp_path, images):
    rows = [{"image": "a.jpg", "caption": f"caption {i}", "id": f"r{i}"} for i in range(40)]
    captions = tmp_path / "pairs.jsonl"
    captions.write_text("".join(json.dumps(row) + "\n" for row in rows))

    def questions(seed: str, name: str) -> list[str]:
        records = run(captions, images, tmp_path / name, "--seed", seed)
        return [record["conversations"][0]["value"] for record in records]

    first = questions("0", "one.json")
    assert questions("0", "two.json") == first
    assert questions("1", "three.json") != first
    assert len(set(first)) > 5  # drawn across the pool, not a constant


def test_plain_records_have_only_the_image_in_the_human_turn(tmp_path, images):
    captions = tmp_path / "pairs.tsv"
    captions.write_text("caption\timage\nA red kite.\ta.jpg\nTwo cats.\tsub/c.jpg\n")
    records = run(captions, images, tmp_path / "plain.jsonl", "--plain")
    assert records == [
        {
            "id": "a",
            "image": "a.jpg",
            "conversations": [
                {"from": "human", "value": "<image>"},
                {"from": "gpt", "value": "A red kite."},
            ],
        },
        {
            "id": "c",
            "image": "sub/c.jpg",
            "conversations": [
                {"from": "human", "value": "<image>"},
                {"from": "gpt", "value": "Two cats."},
            ],
        },
    ]


def test_empty_captions_and_missing_images_are_skipped_and_reported(tmp_path, images, capsys):
    captions = tmp_path / "pairs.json"
    rows = [
        {"image": "a.jpg", "caption": "A dog."},
        {"image": "a.jpg", "caption": "The same dog."},
        {"image": "b.jpg", "caption": "  "},
        {"image": "gone.jpg", "caption": "A ghost."},
    ]
    captions.write_text(json.dumps(rows))
    records = run(captions, images, tmp_path / "out.json")
    assert [record["id"] for record in records] == ["a", "a_1"]  # ids made unique
    report = capsys.readouterr().out
    assert "skipped 1 pairs with an empty caption" in report
    assert "skipped 1 pairs whose image is not in" in report


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("pairs.tsv", "url\ttext\nhttp://x\ta dog\n", r"must name the columns, including 'image'"),
        ("pairs.tsv", "image\tcaption\na.jpg\n", r"pairs.tsv:2: 1 columns, the header has 2"),
        ("pairs.jsonl", '{"image": "a.jpg"}\n', r"pairs.jsonl: line 1 should be an object with"),
        ("pairs.jsonl", '{"image": "a.jpg", "caption"\n', r"pairs.jsonl:1: not valid JSON"),
        ("pairs.csv", "image,caption\n", r"expected a .json, .jsonl or .tsv captions file"),
        ("pairs.json", '{"images": []}', r"pairs.json: the top level has no 'annotations'"),
        ("pairs.json", '[{"image": "gone.jpg", "caption": "x"}]', r"no usable pair \(0 with an"),
    ],
)
def test_bad_caption_files_are_named(tmp_path, images, capsys, name, content, message):
    captions = tmp_path / name
    captions.write_text(content)
    argv = ["datagen", "pretrain", "--captions", str(captions), "--images", str(images)]
    assert main([*argv, "--out", str(tmp_path / "out.json")]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out.json").exists()


def test_reader_yields_pairs_lazily(tmp_path):
    captions = tmp_path / "pairs.jsonl"
    captions.write_text('{"image": "x/y.png", "caption": " A boat. ", "id": 7}\n\n')
    [pair] = read_caption_pairs(captions)
    assert (pair.id, pair.image, pair.caption) == ("7", "x/y.png", "A boat.")
