"""The demo's stage 0: the tokenizer, CLIP and LLM that LLaVA assumes are pretrained.

The tokenizer learns from the world's captions and from the LLM's conversations rendered with
the chat template, so the system prompt, the role markers and the response-format prompt that
every training sample carries become a few tokens each (as they are for Vicuna's tokenizer)
instead of dozens of byte pieces. Then the CLIP (contrastive + patch-level objective) and the
LLM (captions + questions answered about images written in words) train at the same time, one
process each, since neither needs the other.
"""

from __future__ import annotations

import json
import os
import random
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from llavakit.demo.sizes import DemoSizes

TEMPLATE = "vicuna_v1"
LM_SOURCES = ("instruct", "vqa", "noisy")
"""Data files (data/NAME.json) whose conversations the LLM learns with each image in words."""


@dataclass(frozen=True)
class LanguageCorpus:
    """What the tokenizer and the world's LLM read, built once from the training split."""

    captions: list[str]
    """Every caption of every training image (the tokenizer reads them all)."""
    lm_captions: list[str]
    """The captions the LLM reads: `lm_captions_per_image` of each image."""
    conversations: list[list[dict]]
    """The training conversations with each image in words (world/stage0/text.py), shuffled."""
    difficulties: list[int]
    """For each conversation, its level in the LLM's curriculum (`scene_difficulty`)."""
    rendered: list[str]
    """Those conversations rendered with the chat template (for the tokenizer)."""


def language_corpus(out: Path, sizes: DemoSizes) -> LanguageCorpus:
    """The corpus of the training split's captions and LM_SOURCES' conversations."""
    from llavakit.conversation import render_text
    from llavakit.world import load_split
    from llavakit.world.stage0.text import scene_conversations

    split = load_split(out / "world", "train")
    images = {image.file_name: image for image in split.images}
    records = []
    for name in LM_SOURCES:
        path = out / "data" / f"{name}.json"
        if path.is_file():
            records += json.loads(path.read_text())
    pairs = scene_conversations(records, images)
    random.Random(sizes.seed).shuffle(pairs)
    conversations = [messages for messages, _ in pairs]
    per_image = sizes.lm_captions_per_image
    return LanguageCorpus(
        captions=[caption for image in split.images for caption in image.captions],
        lm_captions=[c for image in split.images for c in image.captions[:per_image]],
        conversations=conversations,
        difficulties=[scene_difficulty(image) for _, image in pairs],
        rendered=[render_text(TEMPLATE, messages)[0] for messages in conversations],
    )


def scene_difficulty(image) -> int:
    """0 for an image without objects (text-rich), 1 for one object, 2 for several.

    Two levels, not one per object count: the tiny LLM needs about 1,400 steps on one-object
    scenes before it answers existence above the prior at all, and what it learns there carries
    over to scenes of two to five objects (README, "the stage-0 LLM's curriculum")."""
    return min(len(image.objects), 2)


def make_stage0(out: Path, sizes: DemoSizes) -> dict:
    from llavakit.world.stage0 import train_tokenizer

    corpus = language_corpus(out, sizes)
    train_tokenizer(
        corpus.captions + corpus.rendered, out / "stage0" / "tokenizer", sizes.vocab_size
    )
    threads = max(1, (os.cpu_count() or 2) // 2)
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        clip_job = pool.submit(train_world_clip, out, sizes, threads)
        lm = train_world_lm(out, sizes, threads, corpus)
        clip = clip_job.result()
    lm["benchmark_in_words"] = benchmark_in_words(out, sizes)
    return {"clip": _scalars(clip), "llm": _scalars(lm)}


def train_world_lm(out: Path, sizes: DemoSizes, threads: int, corpus: LanguageCorpus) -> dict:
    """The world's LLM on `corpus`, at the demo's sizes, into stage0/llm."""
    from llavakit.world.stage0 import train_language_model

    return train_language_model(
        corpus.lm_captions,
        out / "stage0" / "tokenizer",
        out / "stage0" / "llm",
        hidden_size=sizes.lm_width,
        layers=sizes.lm_layers,
        heads=sizes.lm_heads,
        steps=sizes.lm_steps,
        seq_len=sizes.lm_seq_len,
        batch_size=sizes.lm_batch_size,
        lr=sizes.lm_lr,
        min_lr_fraction=sizes.lm_lr_floor,
        seed=sizes.seed,
        time_budget_s=sizes.lm_budget_s,
        threads=threads,
        conversations=corpus.conversations if sizes.lm_contextual_qa else (),
        difficulties=corpus.difficulties if sizes.lm_contextual_qa else None,
        curriculum_fraction=sizes.lm_curriculum,
        template=TEMPLATE,
        precision=sizes.precision,
        progress=False,
    )


def benchmark_in_words(out: Path, sizes: DemoSizes) -> dict[str, float]:
    """The stage-0 LLM on the held-out benchmark with each image written in words: what the
    language side brings before LLaVA training (the text-only version of the benchmark)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llavakit.world import build_benchmark, load_split
    from llavakit.world.benchmark import score_answer
    from llavakit.world.stage0.text import answer_in_words

    split = load_split(out / "world", "eval")
    per_category: dict[str, list] = {}
    for question in build_benchmark(split, seed=sizes.seed):
        kept = per_category.setdefault(question.category, [])
        if question.category != "detail" and len(kept) < sizes.eval_per_category:
            kept.append(question.to_json())
    questions = [q for kept in per_category.values() for q in kept]
    folder = out / "stage0" / "llm"
    replies = answer_in_words(
        AutoModelForCausalLM.from_pretrained(folder),
        AutoTokenizer.from_pretrained(folder),
        TEMPLATE,
        questions,
        {image.file_name: image for image in split.images},
    )
    scores: dict[str, list[float]] = {}
    for question, reply in zip(questions, replies):
        score = score_answer(question["category"], question["answer"], reply)
        scores.setdefault(question["category"], []).append(score)
    return {category: round(sum(v) / len(v), 3) for category, v in scores.items()}


def train_world_clip(out: Path, sizes: DemoSizes, threads: int) -> dict:
    """The world's CLIP on the training split's image-caption pairs (run in its own process)."""
    from llavakit.world import load_split
    from llavakit.world.stage0 import train_clip
    from llavakit.world.stage0.region_labels import label_classes, patch_labels

    split = load_split(out / "world", "train")
    folder = out / "world" / "images"
    pairs = [(folder / image.file_name, caption) for image in split.images for caption in image.captions]  # fmt: skip
    random.Random(sizes.seed).shuffle(pairs)
    labels = None
    if sizes.clip_region_objective:
        grid = sizes.image_size // sizes.patch_size
        labels = {
            str(folder / image.file_name): patch_labels(image, grid) for image in split.images
        }
    return train_clip(
        pairs,
        out / "stage0" / "tokenizer",
        out / "stage0" / "clip",
        image_size=sizes.image_size,
        patch_size=sizes.patch_size,
        hidden_size=sizes.clip_width,
        lr=sizes.clip_lr,
        vision_layers=sizes.clip_layers,
        steps=sizes.clip_steps,
        seed=sizes.seed,
        time_budget_s=sizes.clip_budget_s,
        threads=threads,
        patch_labels=labels,
        label_classes=label_classes(sizes.image_size // sizes.patch_size),
        precision=sizes.precision,
        progress=False,
    )


def _scalars(metrics: dict) -> dict:
    """The metrics without their per-step lists (losses)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, dict))}
