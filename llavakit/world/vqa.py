"""Short-answer VQA records for the world: the stand-in for the academic VQA part of LLaVA-1.5's mix.

LLaVA-1.5 adds VQAv2, GQA and other short-answer sets to the instruction data, each question
followed by a response-format prompt ("Answer the question using a single word or phrase.") and
every question about one image merged into one multi-turn record. Those answers come from human
annotators, not from the teacher LLM, so here they come straight from the world's annotations
(llavakit.world.perception) and are written as an ordinary LLaVA JSON file.

Many short answers per image are also what a tiny model learns grounding from fastest: the
image's tokens are paid for once per record and nearly every trained token is a decision
(yes/no, a colour, a number, a side) rather than a copy of the question.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from llavakit.conversation import IMAGE_TOKEN
from llavakit.files import write_text_atomic
from llavakit.world.annotations import WorldSplit
from llavakit.world.perception import existence_pairs, perception_pools, pick_pairs
from llavakit.world.relations import things_from_image

RESPONSE_FORMAT = "Answer the question using a single word or phrase."
"""LLaVA-1.5's prompt for short-answer VQA data (VQAv2, GQA, OK-VQA, ...)."""


def vqa_record(image, rng: random.Random, questions: int = 12, existence_rounds: int = 2) -> dict:
    """One multi-turn record: up to `questions` short-answer questions about one scene.

    Existence is asked `existence_rounds` times over (each round a present object and a missing
    one, half the missing ones near misses), since it is the question that most needs binding a
    colour to a shape."""
    things = things_from_image(image)
    pools = perception_pools(things, rng)
    for _ in range(existence_rounds - 1):
        pools["existence"] += existence_pairs(things, rng)
    turns = []
    for index, pair in enumerate(pick_pairs(pools, rng, questions)):
        prompt = f"{pair.question}\n{RESPONSE_FORMAT}"
        if index == 0:
            prompt = f"{IMAGE_TOKEN}\n{prompt}"
        turns += [{"from": "human", "value": prompt}, {"from": "gpt", "value": pair.short}]
    return {"id": f"{image.image_id}:vqa", "image": image.file_name, "conversations": turns}


def write_vqa(split: WorldSplit, out: str | Path, seed: int = 0, questions: int = 12) -> int:
    """Write the split's scenes as short-answer VQA records (LLaVA JSON); returns the count."""
    rng = random.Random(f"llavakit-world-vqa:{seed}")
    scenes = sorted(split.scenes(), key=lambda image: image.image_id)
    records = [vqa_record(image, rng, questions) for image in scenes]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(records))
    return len(records)
