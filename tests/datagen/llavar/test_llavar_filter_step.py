"""The filter step: text images kept, shapes and broken files dropped, scores, shards, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from llavakit.datagen.llavar.filter import FilterOptions, FilterThresholds, run_filter
from llavakit.datagen.llavar.items import Shard

TEXT_KEYS = {"text_0.png", "text_1.png", "text_2.png", "signs/text_3.png"}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def forbid_ocr(monkeypatch) -> None:
    """Make any new OCR fail, to prove a run reused earlier results."""

    def refuse(*args, **kwargs):
        raise AssertionError("OCR was run again")

    monkeypatch.setattr("llavakit.datagen.llavar.ocr.make_engine", refuse)


def test_filter_keeps_text_images_and_drops_shapes_and_broken_files(filtered):
    kept = read_jsonl(filtered / "kept.jsonl")
    dropped = {r["image"]: r for r in read_jsonl(filtered / "dropped.jsonl")}
    assert {r["image"] for r in kept} == TEXT_KEYS
    assert set(dropped) == {"shapes_0.png", "shapes_1.png", "corrupt.jpg"}
    assert dropped["corrupt.jpg"]["reason"] == "unreadable image"
    assert "corrupt.jpg" in dropped["corrupt.jpg"]["error"]
    assert dropped["shapes_0.png"]["scores"] == {"text_area": 0.0, "confident_words": 0}
    for record in kept:
        assert record["scores"]["confident_words"] >= 5
        assert 0.03 < record["scores"]["text_area"] < 0.5
        assert record["ocr"] == {"engine": "rapidocr", "short_edge": 384}
        assert Path(record["path"]).is_file() and record["lines"]
    with Image.open(filtered / "histogram.png") as plot:
        assert plot.size[0] > 600


def test_new_thresholds_reuse_the_journal(filtered, monkeypatch, image_folder, tmp_path):
    forbid_ocr(monkeypatch)
    out = tmp_path / "strict"
    for name in ("journal",):
        (out / name).mkdir(parents=True)
        for journal in (filtered / name).iterdir():
            (out / name / journal.name).write_bytes(journal.read_bytes())
    report = run_filter(
        FilterOptions(
            out=out, images=image_folder, thresholds=FilterThresholds(min_words=20), progress=False
        )
    )
    assert "kept 0" in report and "too few words" in report
    reasons = {r["image"]: r["reason"] for r in read_jsonl(out / "dropped.jsonl")}
    assert reasons["text_0.png"].endswith("confident words < 20")


def test_shards_split_the_work_and_an_unsharded_run_merges_them(
    filtered, image_folder, tmp_path, monkeypatch
):
    out = tmp_path / "sharded"
    (out / "journal").mkdir(parents=True)
    # Shards reuse the session's OCR through the list (no OCR needed), but journal their own.
    lists = (filtered / "kept.jsonl", filtered / "dropped.jsonl")
    forbid_ocr(monkeypatch)
    shard_keys = []
    for index in range(2):
        shard = Shard(2, index)
        run_filter(
            FilterOptions(out=out, images=image_folder, lists=lists, shard=shard, progress=False)
        )
        kept = read_jsonl(out / f"kept-shard{index:05d}-of00002.jsonl")
        dropped = read_jsonl(out / f"dropped-shard{index:05d}-of00002.jsonl")
        shard_keys.append({r["image"] for r in kept + dropped})
    assert shard_keys[0] & shard_keys[1] == set()
    assert shard_keys[0] | shard_keys[1] == TEXT_KEYS | {
        "shapes_0.png",
        "shapes_1.png",
        "corrupt.jpg",
    }
    run_filter(FilterOptions(out=out, images=image_folder, progress=False))
    assert {r["image"] for r in read_jsonl(out / "kept.jsonl")} == TEXT_KEYS


def test_clip_scores_join_the_ocr_scores(filtered, tiny_full_clip, tiny_clip, tmp_path, capsys):
    kept_list = (filtered / "kept.jsonl",)
    run_filter(
        FilterOptions(
            out=tmp_path / "with_clip",
            lists=kept_list,
            clip=tiny_full_clip,
            thresholds=FilterThresholds(min_clip_probability=0.0),
            progress=False,
        )
    )
    kept = read_jsonl(tmp_path / "with_clip" / "kept.jsonl")
    assert {r["image"] for r in kept} == TEXT_KEYS
    assert all(0.0 <= r["scores"]["clip_text_probability"] <= 1.0 for r in kept)

    run_filter(
        FilterOptions(out=tmp_path / "vision_only", lists=kept_list, clip=tiny_clip, progress=False)
    )
    assert "has no text model" in capsys.readouterr().err
    assert all(
        "clip_text_probability" not in r["scores"]
        for r in read_jsonl(tmp_path / "vision_only" / "kept.jsonl")
    )


def test_bad_inputs_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        run_filter(FilterOptions(out=tmp_path / "out", images=tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        run_filter(FilterOptions(out=tmp_path / "out", images=tmp_path / "missing"))
    bad_list = tmp_path / "list.jsonl"
    bad_list.write_text('{"image": "a.png", "path": "a.png"}\n{"path": "b.png"}\n')
    with pytest.raises(ValueError, match="list.jsonl:2"):
        run_filter(FilterOptions(out=tmp_path / "out", lists=(bad_list,)))
    with pytest.raises(ValueError, match="--shard-index"):
        Shard(2, 2)


def test_cli_filter(image_folder, filtered, tmp_path, monkeypatch, capsys):
    from llavakit.cli import main

    forbid_ocr(monkeypatch)
    out = tmp_path / "cli"
    code = main(
        [
            "datagen",
            "llavar",
            "filter",
            "--list",
            str(filtered / "kept.jsonl"),
            "--out",
            str(out),
            "--min-words",
            "3",
            "--no-progress",
        ]
    )
    assert code == 0
    assert "kept 4" in capsys.readouterr().out
    assert (
        main(
            [
                "datagen",
                "llavar",
                "filter",
                "--images",
                str(image_folder),
                "--out",
                str(out),
                "--num-shards",
                "2",
                "--shard-index",
                "5",
            ]
        )
        == 2
    )
    assert "--shard-index" in capsys.readouterr().err
