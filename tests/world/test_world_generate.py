"""A generated world: COCO layout, determinism, reuse, and train/eval kept apart."""

from __future__ import annotations

import filecmp
import json

import pytest

from llavakit.cli import main
from llavakit.world.annotations import ANNOTATION_FILES, WorldSplit, load_split
from llavakit.world.generate import generate_world


def test_layout_follows_coco(world_dir):
    for split in ("train", "eval"):
        instances = json.loads((world_dir / split / "instances.json").read_text())
        captions = json.loads((world_dir / split / "captions.json").read_text())
        texts = json.loads((world_dir / split / "texts.json").read_text())
        ids = {image["id"] for image in instances["images"]}
        for image in instances["images"]:
            assert {"id", "file_name", "width", "height"} <= set(image)
            assert (world_dir / "images" / image["file_name"]).is_file()
        categories = {c["id"]: c["name"] for c in instances["categories"]}
        assert all({"id", "name", "supercategory"} <= set(c) for c in instances["categories"])
        for annotation in instances["annotations"]:
            assert annotation["image_id"] in ids and annotation["category_id"] in categories
            x, y, w, h = annotation["bbox"]
            assert annotation["area"] == w * h and annotation["iscrowd"] == 0
            assert set(annotation["attributes"]) == {"color", "size"}
        per_image = {}
        for caption in captions["annotations"]:
            assert {"id", "image_id", "caption"} <= set(caption)
            per_image[caption["image_id"]] = per_image.get(caption["image_id"], 0) + 1
        assert set(per_image) == ids and min(per_image.values()) >= 5
        assert all({"image_id", "text", "bbox"} <= set(t) for t in texts["annotations"])


def test_splits_share_no_image_and_no_content(world_dir):
    train, held_out = load_split(world_dir, "train"), load_split(world_dir, "eval")
    assert len(train.scenes()) == 45 and len(held_out.scenes()) == 15
    assert len(train.text_images()) == 18 and len(held_out.text_images()) == 6
    assert not {i.image_id for i in train.images} & {i.image_id for i in held_out.images}
    assert not {i.file_name for i in train.images} & {i.file_name for i in held_out.images}
    assert not {i.content_key() for i in train.images} & {i.content_key() for i in held_out.images}
    on_disk = {p.name for p in (world_dir / "images").iterdir()}
    assert on_disk == {i.file_name for i in train.images + held_out.images}
    assert sum(i.small_text for i in train.images + held_out.images) == 6


def test_files_round_trip_through_the_dataclasses(world_dir):
    split = load_split(world_dir, "eval")
    contents = split.to_coco()
    for name in ANNOTATION_FILES:
        assert contents[name] == json.loads((world_dir / "eval" / name).read_text())
    again = WorldSplit.from_coco("eval", *(contents[name] for name in ANNOTATION_FILES))
    assert again == split


def test_same_seed_same_world_and_reuse(world_dir, tmp_path):
    args = dict(n_scenes=60, n_text_images=24, seed=7, eval_fraction=0.25, small_text_fraction=0.25)
    copy = generate_world(tmp_path / "copy", **args, progress=False)
    assert not copy.reused and copy.counts["eval"] == {"scene": 15, "text": 6}
    for folder in ("train", "eval", "images"):
        comparison = filecmp.dircmp(world_dir / folder, tmp_path / "copy" / folder)
        assert not comparison.left_only and not comparison.right_only
        _, mismatch, errors = filecmp.cmpfiles(
            world_dir / folder, tmp_path / "copy" / folder, comparison.common_files, shallow=False
        )
        assert not mismatch and not errors
    assert generate_world(tmp_path / "copy", **args, progress=False).reused
    other = generate_world(tmp_path / "copy", **{**args, "seed": 8}, progress=False)
    assert not other.reused
    assert load_split(world_dir, "train") != load_split(tmp_path / "copy", "train")


def test_excluded_content_never_reaches_the_eval_split(world_dir, tmp_path):
    """Another world's images (the stage-0 stand-ins' training set) are kept out of eval."""
    args = dict(n_scenes=60, n_text_images=24, seed=7, eval_fraction=0.25, small_text_fraction=0.25)
    first_eval = {i.content_digest() for i in load_split(world_dir, "eval").images}
    again = generate_world(tmp_path / "again", **args, exclude=first_eval, progress=False)
    assert not again.reused and again.config.excluded
    held_out = load_split(tmp_path / "again", "eval").images
    assert len(held_out) == 21 and not {i.content_digest() for i in held_out} & first_eval
    assert load_split(tmp_path / "again", "train") == load_split(world_dir, "train")
    assert generate_world(tmp_path / "again", **args, exclude=first_eval, progress=False).reused
    assert not generate_world(tmp_path / "again", **args, progress=False).reused


def test_an_image_does_not_depend_on_how_many_were_asked_for(tmp_path):
    generate_world(tmp_path / "a", n_scenes=4, n_text_images=0, eval_fraction=0.0, progress=False)
    generate_world(tmp_path / "b", n_scenes=8, n_text_images=0, eval_fraction=0.0, progress=False)
    first = load_split(tmp_path / "a", "train").images
    assert first == load_split(tmp_path / "b", "train").images[:4]


def test_worker_processes_draw_the_same_world(tmp_path):
    """Drawing in processes changes nothing on disk, redrawn eval images included."""
    args = dict(n_scenes=330, n_text_images=80, seed=5, small_text_fraction=0.25, progress=False)
    # A small world of the same seed starts with the same eval images: excluding them makes the
    # big world's workers redraw those.
    generate_world(tmp_path / "small", **{**args, "n_scenes": 20, "n_text_images": 10})
    excluded = {i.content_digest() for i in load_split(tmp_path / "small", "eval").images}
    assert len(excluded) == 3
    one = generate_world(tmp_path / "one", **args, exclude=excluded, workers=1)
    two = generate_world(tmp_path / "two", **args, exclude=excluded, workers=2)
    assert one.counts == two.counts and sum(one.counts["train"].values()) == 369
    held_out = load_split(tmp_path / "two", "eval").images
    assert not {i.content_digest() for i in held_out} & excluded
    for folder in ("train", "eval", "images"):
        comparison = filecmp.dircmp(tmp_path / "one" / folder, tmp_path / "two" / folder)
        assert not comparison.left_only and not comparison.right_only
        _, mismatch, errors = filecmp.cmpfiles(
            tmp_path / "one" / folder,
            tmp_path / "two" / folder,
            comparison.common_files,
            shallow=False,
        )
        assert not mismatch and not errors
    with pytest.raises(ValueError, match="workers must be >= 1"):
        generate_world(tmp_path / "none", **args, workers=0)


def test_bad_arguments_and_files_get_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="eval_fraction"):
        generate_world(tmp_path, n_scenes=4, n_text_images=0, eval_fraction=1.5)
    with pytest.raises(ValueError, match="at least one image"):
        generate_world(tmp_path, n_scenes=0, n_text_images=0)
    with pytest.raises(FileNotFoundError, match="llavakit world generate"):
        load_split(tmp_path, "train")
    (tmp_path / "train").mkdir()
    for name in ANNOTATION_FILES:
        (tmp_path / "train" / name).write_text(
            '{"images": [], "annotations": [], "categories": []}'
        )
    (tmp_path / "train" / "captions.json").write_text(
        '{"images": [], "annotations": [{"id": 3, "image_id": 99, "caption": "x"}]}'
    )
    with pytest.raises(ValueError, match=r"captions.json annotations\[id=3\]: image_id 99"):
        load_split(tmp_path, "train")


def test_command_line_generates_benchmarks_and_previews(tmp_path, capsys):
    out = tmp_path / "w"
    common = ["world", "generate", "--out", str(out), "--scenes", "6", "--text-images", "2"]
    assert main([*common, "--seed", "1", "--eval-fraction", "0.5", "--quiet"]) == 0
    assert "eval: 3 scenes + 1 text images" in capsys.readouterr().out
    assert main([*common, "--workers", "0"]) == 2
    assert "--workers must be >= 1, got 0" in capsys.readouterr().err
    assert (
        main(["world", "benchmark", "--world", str(out), "--out", str(tmp_path / "q.jsonl")]) == 0
    )
    assert len((tmp_path / "q.jsonl").read_text().splitlines()) >= 3 * 3 + 1
    assert main(["world", "preview", "--world", str(out), "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0
    assert main(["world", "benchmark", "--world", str(tmp_path / "none"), "--out", "x"]) == 2
    assert "llavakit world generate" in capsys.readouterr().err
