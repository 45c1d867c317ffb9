"""The cluster step: CLIP embeddings, k-means, contact sheets, capped lists, shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from llavar_images import text_image
from PIL import Image

from llavakit.datagen.llavar.clip import ClipModel
from llavakit.datagen.llavar.cluster import ClusterOptions, contact_sheet, run_cluster
from llavakit.datagen.llavar.items import Shard


@pytest.fixture()
def two_kinds(tmp_path) -> Path:
    """Four pale text images and four dark red squares: two groups any image encoder tells apart."""
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(4):
        text_image(index).image.save(folder / f"text_{index}.png")
        Image.new("RGB", (200, 200), (120 + 10 * index, 10, 20)).save(folder / f"red_{index}.png")
    return folder


def test_embeddings_are_unit_vectors_from_either_kind_of_folder(tiny_clip, tiny_full_clip):
    images = [text_image(0).image, Image.new("RGB", (50, 80), "red")]
    for folder in (tiny_clip, tiny_full_clip):
        vectors = ClipModel.load(folder).embed_images(images)
        assert vectors.shape[0] == 2 and vectors.dtype == np.float32
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not ClipModel.load(tiny_clip).has_text and ClipModel.load(tiny_full_clip).has_text


def test_cluster_groups_kinds_writes_sheets_and_caps_lists(two_kinds, tiny_clip, tmp_path):
    out = tmp_path / "clusters"
    report = run_cluster(
        ClusterOptions(
            out=out,
            clip=tiny_clip,
            k=2,
            images=two_kinds,
            cap=3,
            sheet_size=4,
            thumbnail=40,
            progress=False,
        )
    )
    assert "embedded 8" in report
    summary = json.loads((out / "assignments.json").read_text())
    groups: dict[int, set[str]] = {}
    for key, cluster in summary["assignments"].items():
        groups.setdefault(cluster, set()).add(key.split("_")[0])
    assert sorted(map(sorted, groups.values())) == [["red"], ["text"]]
    for entry in summary["clusters"]:
        assert entry["size"] == 4 and entry["listed"] == 3
        rows = [json.loads(line) for line in (out / entry["list"]).read_text().splitlines()]
        assert len(rows) == 3 and all(Path(r["path"]).is_file() for r in rows)
        assert [r["distance"] for r in rows] == sorted(r["distance"] for r in rows)
        with Image.open(out / entry["sheet"]) as sheet:
            assert sheet.size == (2 * 44 + 4, 24 + 2 * 44 + 4)  # 2x2 grid of 40 px thumbnails


def test_shards_embed_and_the_unsharded_run_clusters(two_kinds, tiny_clip, tmp_path, monkeypatch):
    out = tmp_path / "clusters"
    for index in range(2):
        report = run_cluster(
            ClusterOptions(
                out=out,
                clip=tiny_clip,
                k=2,
                images=two_kinds,
                shard=Shard(2, index),
                progress=False,
            )
        )
        assert "embedded 4" in report and "embeddings only" in report
    assert not (out / "assignments.json").exists()
    monkeypatch.setattr(ClipModel, "load", lambda *a, **k: pytest.fail("embedded again"))
    run_cluster(ClusterOptions(out=out, clip=tiny_clip, k=2, images=two_kinds, progress=False))
    assert len(json.loads((out / "assignments.json").read_text())["assignments"]) == 8


def test_bad_inputs(two_kinds, tiny_clip, tmp_path):
    (two_kinds / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="--k 20 is more than the 8 images"):
        run_cluster(
            ClusterOptions(
                out=tmp_path / "c", clip=tiny_clip, k=20, images=two_kinds, progress=False
            )
        )
    assert (
        "broken.png"
        in json.loads((tmp_path / "c" / "journal" / "embed.jsonl").read_text().splitlines()[0])[
            "error"
        ]
    )
    with pytest.raises(ValueError, match="--k must be at least 1"):
        ClusterOptions(out=tmp_path, clip=tiny_clip, k=0)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        run_cluster(
            ClusterOptions(out=tmp_path / "d", clip=tmp_path, k=2, images=two_kinds, progress=False)
        )


def test_contact_sheet_skips_unreadable_files(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (300, 100), "blue").save(good)
    sheet = contact_sheet([good, tmp_path / "missing.png"], "title", thumbnail=30)
    assert sheet.size == (2 * 34 + 4, 24 + 34 + 4)
    assert sheet.getpixel((4 + 15, 24 + 4 + 15)) == (0, 0, 255)  # the thumbnail's centre


def test_cli_cluster(two_kinds, tiny_clip, tmp_path, capsys):
    from llavakit.cli import main

    out = tmp_path / "cli"
    assert (
        main(
            [
                "datagen",
                "llavar",
                "cluster",
                "--images",
                str(two_kinds),
                "--clip",
                str(tiny_clip),
                "--k",
                "2",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    assert "clusters (sizes): 4, 4" in capsys.readouterr().out
