"""The demo's LLaVAR data: real PP-OCRv4 reads of the world's text-rich images.

Stage 1 gets the noisy "what text is in the image" records; after stage 1, the stage-1 model
captions each image with its text masked out (as LLaVAR used BLIP-2), and the teacher writes
conversations grounded in the OCR lines and that caption for stage 2.
"""

from __future__ import annotations

import json
from pathlib import Path

from llavakit.demo.sizes import DemoSizes


def text_image_list(out: Path, sizes: DemoSizes) -> Path:
    """The training split's text-rich images to OCR (the first `ocr_images` by id)."""
    from llavakit.world import load_split

    split = load_split(out / "world", "train")
    texts = sorted((i for i in split.images if not i.is_scene), key=lambda i: i.image_id)
    path = out / "data" / "text_images.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {"image": image.file_name, "path": str(out / "world" / "images" / image.file_name)}
            )
            + "\n"
            for image in texts[: sizes.ocr_images]
        )
    )
    return path


def make_noisy_data(out: Path, sizes: DemoSizes) -> dict:
    from llavakit.datagen.llavar.items import journal_folder, read_journals
    from llavakit.datagen.llavar.noisy import NoisyOptions, run_noisy

    images = text_image_list(out, sizes)
    target = out / "data" / "noisy.json"
    report = run_noisy(
        NoisyOptions(
            out=target, images=out / "world" / "images", lists=(images,), seed=sizes.seed, workers=2
        )
    )
    # Keep the OCR results beside the list so the conversation step reuses them.
    stored = read_journals(journal_folder(target), "ocr")
    with_ocr = out / "data" / "text_images_ocr.jsonl"
    with_ocr.write_text("".join(json.dumps(record) + "\n" for record in stored.values()))
    return {"noisy_report": report, "ocr_images": len(stored)}


def conversation_list(out: Path, sizes: DemoSizes) -> Path:
    """The OCR'd images the teacher writes conversations for: the first `llavar_conversations`.

    As in LLaVAR (16K conversations beside 422K noisy OCR records), the OCR-grounded
    conversations cover a subset of the text-rich images that the noisy data covers."""
    records = (out / "data" / "text_images_ocr.jsonl").read_text().splitlines()
    path = out / "data" / "text_images_conversations.jsonl"
    path.write_text("".join(line + "\n" for line in records[: sizes.llavar_conversations]))
    return path


def make_conversations(
    out: Path, sizes: DemoSizes, captioner_checkpoint: str, captioner_key: str
) -> dict:
    """`captioner_key` identifies the stage-1 model, so its captions are never reused for another."""
    from llavakit.datagen.llavar.conversations import (
        ConversationOptions,
        engine_captioner,
        run_conversations,
    )
    from llavakit.datagen.llavar.items import journal_folder
    from llavakit.demo.files import remove

    target = out / "data" / "llavar.json"
    remove(target, journal_folder(target))  # a rerun means a new captioner: nothing is reused
    captioner = engine_captioner(captioner_checkpoint, max_new_tokens=32, device="cpu")
    report = run_conversations(
        ConversationOptions(
            out=target,
            images=out / "world" / "images",
            lists=(conversation_list(out, sizes),),
            captioner_name=f"stage1:{captioner_key}",
            progress=True,
        ),
        captioner,
        None,
    )
    records = json.loads(target.read_text())
    return {"llavar_report": report, "llavar_records": len(records)}
