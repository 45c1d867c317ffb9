"""A small instruct data set with every kind of bad record, for `data check` and `train` tests.

Built on `tiny.write_image_records` images, for a model with max_length=128 (tiny_model_config):
- 13 good records;
- 4 records whose image is unusable: a truncated PNG, a truncated JPEG, a zero-byte file and a
  text file named .png (found by decoding, up front);
- 1 record with an empty answer (found by validation, up front);
- 2 records whose answer runs past max_length (trained, truncated);
- 1 record whose question alone fills max_length (every answer token cut: fails when loaded).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from PIL import Image

BAD_IMAGES = {
    "truncated.png": "corrupt or truncated",
    "truncated.jpg": "corrupt or truncated",
    "empty.png": "not a recognised image file",
    "text.png": "not a recognised image file",
}
GOOD = 13
SKIPPED = len(BAD_IMAGES) + 1  # the bad images and the empty answer
TRUNCATED = 2
FAILING = 1
LOADED_PER_EPOCH = GOOD + TRUNCATED + FAILING  # 16: whole batches of 4 or 8


def record(rid: str, image: str | None, question: str, answer: str) -> dict:
    human = f"<image>\n{question}" if image else question
    entry = {"id": rid, "conversations": [{"from": "human", "value": human}]}
    entry["conversations"].append({"from": "gpt", "value": answer})
    if image:
        entry["image"] = image
    return entry


def write_bad_data(folder: Path, tiny_data: dict[str, Path]) -> dict[str, Path]:
    images = folder / "images"
    shutil.copytree(tiny_data["images"], images)
    png = (images / "0.png").read_bytes()
    (images / "truncated.png").write_bytes(png[: len(png) // 2])
    Image.open(images / "1.png").convert("RGB").save(images / "whole.jpg", quality=90)
    jpeg = (images / "whole.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (images / "empty.png").write_bytes(b"")
    (images / "text.png").write_text("this is a text file, not a PNG\n")

    records = [
        record(f"good{i}", f"{i}.png", "What colour is the square?", "It is red.")
        for i in range(GOOD)
    ]
    records += [record(f"bad-{name}", name, "What is it?", "A square.") for name in BAD_IMAGES]
    records.append(record("empty-answer", "2.png", "What is it?", "  "))
    records += [
        record(f"long-answer{i}", "3.png", "Describe.", "the square is red " * 10)
        for i in range(TRUNCATED)
    ]
    records.append(record("long-question", "4.png", "is the square red " * 10, "yes"))
    data = folder / "bad.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    return {"data": data, "images": images}
