"""What stage 0 learns from besides captions: images in words, and patch-level labels."""

from __future__ import annotations

import json
import re

import torch

from llavakit.conversation import encode
from llavakit.world.annotations import load_split
from llavakit.world.stage0.region_labels import IGNORE, LETTERS, label_classes, patch_labels
from llavakit.world.stage0.text import (
    conversations_in_words,
    image_in_words,
    scene_conversations,
)
from llavakit.world.vocabulary import CATEGORIES, OBJECT_COLOURS, SIZES, WORDS
from llavakit.world.vqa import write_vqa


def test_a_scene_in_words_names_every_object_with_its_centre(world_dir):
    for image in load_split(world_dir, "train").scenes()[:10]:
        text = image_in_words(image)
        assert text.startswith("Scene: ") and text.endswith("background.")
        found = re.findall(r"an? (small|large) (\w+) (\w+) at \((\d+), (\d+)\)", text)
        assert sorted((s, c, k) for s, c, k, _, _ in found) == sorted(
            (o.size, o.color, o.category) for o in image.objects
        )
        for obj in image.objects:
            x, y, w, h = obj.bbox
            centre = (
                round(100 * (x + w / 2) / image.width),
                round(100 * (y + h / 2) / image.height),
            )
            assert (obj.size, obj.color, obj.category, *map(str, centre)) in found


def test_a_text_image_in_words_quotes_its_lines_in_order(world_dir):
    image = load_split(world_dir, "train").text_images()[0]
    text = image_in_words(image)
    assert re.findall(r'"([^"]+)"', text) == image.lines()
    assert image.kind in text.lower()


def test_conversations_in_words_keep_the_turns_and_only_training_images(world_dir, tmp_path):
    train, held_out = load_split(world_dir, "train"), load_split(world_dir, "eval")
    write_vqa(train, tmp_path / "train.json")
    write_vqa(held_out, tmp_path / "eval.json")
    records = json.loads((tmp_path / "train.json").read_text())
    records += json.loads((tmp_path / "eval.json").read_text())
    images = {image.file_name: image for image in train.images}
    conversations = conversations_in_words(records, images)
    assert len(conversations) == len(train.scenes())
    for messages, record in zip(conversations, records):
        assert record["image"] in images
        assert len(messages) == len(record["conversations"])
        first = messages[0]["content"]
        assert "<image>" not in first
        assert first.startswith(image_in_words(images[record["image"]]) + "\n")
        assert [m["content"] for m in messages[1:]] == [
            t["value"] for t in record["conversations"][1:]
        ]
    paired = scene_conversations(records, images)  # what the LLM's curriculum orders by
    assert [messages for messages, _ in paired] == conversations
    assert [image.file_name for _, image in paired] == [r["image"] for r in records[: len(paired)]]


def test_only_replies_of_conversations_in_words_are_trained(world_dir, tmp_path):
    from llavakit.world.stage0 import train_tokenizer

    train = load_split(world_dir, "train")
    write_vqa(train, tmp_path / "vqa.json")
    images = {image.file_name: image for image in train.images}
    messages = conversations_in_words(json.loads((tmp_path / "vqa.json").read_text()), images)[0]
    tokenizer = train_tokenizer([m["content"] for m in messages] * 5, tmp_path / "tok", 400)
    encoded = encode(tokenizer, "vicuna_v1", messages)
    trained = tokenizer.decode([t for t in encoded.labels if t != -100])
    assert trained.split("</s>")[:-1] == [" " + m["content"] for m in messages[1::2]]


def test_patch_labels_name_what_lies_under_each_patch_centre(world_dir):
    split = load_split(world_dir, "train")
    grid = 8
    for image in split.scenes()[:10]:
        labels = patch_labels(image, grid)
        assert labels.shape == (grid * grid, len(label_classes(grid)))
        assert (labels[:, 3:5] == IGNORE).all()  # no text in a scene
        assert labels[:, 5].tolist() == [1 + i // grid for i in range(grid * grid)]
        assert labels[:, 6].tolist() == [1 + i % grid for i in range(grid * grid)]
        for obj in image.objects:
            x, y, w, h = obj.bbox
            col = min(grid - 1, int((x + w / 2) / image.width * grid))
            row = min(grid - 1, int((y + h / 2) / image.height * grid))
            covering = [
                o for o in image.objects
                if o.bbox[0] <= (col + 0.5) * image.width / grid <= o.bbox[0] + o.bbox[2]
                and o.bbox[1] <= (row + 0.5) * image.height / grid <= o.bbox[1] + o.bbox[3]
            ]  # fmt: skip
            if covering and covering[-1] is obj:
                shape, colour, size = labels[row * grid + col, :3].tolist()
                assert CATEGORIES[shape - 1] == obj.category
                assert list(OBJECT_COLOURS)[colour - 1] == obj.color
                assert SIZES[size - 1] == obj.size
        background = [
            i for i in range(grid * grid)
            if not any(
                o.bbox[0] <= (i % grid + 0.5) * image.width / grid <= o.bbox[0] + o.bbox[2]
                and o.bbox[1] <= (i // grid + 0.5) * image.height / grid <= o.bbox[1] + o.bbox[3]
                for o in image.objects
            )
        ]  # fmt: skip
        assert (labels[background, :3] == IGNORE).all()  # background is no target


def test_text_patches_name_their_word_and_letter(world_dir):
    image = load_split(world_dir, "train").text_images()[0]
    labels = patch_labels(image, 16)
    assert (labels[:, :3] == IGNORE).all()
    words = {WORDS[i - 1].lower() for i in labels[:, 3].tolist() if i > 0}
    assert words and words <= {t.text.lower() for t in image.texts if t.level == "word"}
    letters = {LETTERS[i - 1] for i in labels[:, 4].tolist() if i > 0}
    assert letters <= set("".join(words))
    assert torch.equal(labels[:, 3] > 0, labels[:, 4] > 0)
