"""What the world's "pretrained LLM" reads: the world's language, and questions answered about
images written out in words.

Vicuna arrives able to answer questions about a context written in its prompt: find the named
thing, copy its name, read off its attribute, count, compare two things. LLaVA relies on that:
stage 1 only has to map images into a language the LLM can already reason over. A language
model trained on captions alone has none of it, and a tiny model cannot pick it up within a
few hundred steps of stage 2 (measured: with the scene written out in words, 300 stage-2 steps
left colour questions at 0.36 and existence at the yes/no prior).

So the world's LM is trained, beside plain text (captions), on the very conversations stage 2
uses, with each image replaced by its annotation in words: the objects' size, colour, shape and
centre (in percent of the image) for a scene, the lines of text for a text-rich image. This is
the world's version of the text-only context LLaVA's teacher answered from (captions and boxes).
Only training-split images appear here; the eval split stays unseen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from llavakit.conversation import IMAGE_TOKEN, messages_from_llava
from llavakit.world.annotations import WorldImage
from llavakit.world.relations import thing_from_object
from llavakit.world.vocabulary import with_article


def image_in_words(image: WorldImage) -> str:
    """The annotation of one image as a line of text.

    "Scene: a small black star at (14, 11), a large purple heart at (47, 23) on a gray
    background." or 'A sign with the text: "Rain" / "Tower".'"""
    if image.is_scene:
        parts = []
        for obj in sorted(image.objects, key=lambda o: (o.bbox[1], o.bbox[0])):
            thing = thing_from_object(obj, image.width, image.height)
            x, y = thing.center
            parts.append(f"{with_article(thing.full_name)} at ({round(100 * x)}, {round(100 * y)})")
        return f"Scene: {', '.join(parts)} on {with_article(image.background)} background."
    lines = " / ".join(f'"{line}"' for line in image.lines())
    return f"{with_article(image.kind).capitalize()} with the text: {lines}."


def conversations_in_words(
    records: Iterable[dict], images: Mapping[str, WorldImage]
) -> list[list[dict]]:
    """Chat messages of every record whose image is in `images`, the image put in words.

    Records of other images (the eval split's, or unknown files) are left out, as are records
    without exactly one image."""
    return [messages for messages, _ in scene_conversations(records, images)]


def scene_conversations(
    records: Iterable[dict], images: Mapping[str, WorldImage]
) -> list[tuple[list[dict], WorldImage]]:
    """`conversations_in_words`, each beside the image it is about (for its number of objects)."""
    conversations = []
    for record in records:
        image = images.get(record.get("image"))
        if image is None:
            continue
        messages = messages_from_llava(record["conversations"])
        first = messages[0]["content"]
        if first.count(IMAGE_TOKEN) != 1:
            continue
        messages[0] = {**messages[0], "content": first.replace(IMAGE_TOKEN, image_in_words(image))}
        conversations.append((messages, image))
    return conversations


def answer_in_words(language_model, tokenizer, template: str, questions, images, batch_size=64):
    """Greedy replies of a text-only LLM to benchmark questions with each image in words.

    `questions` are benchmark JSON dicts (`image`, `text`); `images` maps file names to their
    WorldImage. This measures what the world's LLM brings to LLaVA before it sees any image:
    the text-only version of the benchmark. Returns the replies in order."""
    import torch

    from llavakit.conversation import encode

    replies = []
    language_model.eval()
    for start in range(0, len(questions), batch_size):
        chunk = questions[start : start + batch_size]
        prompts = [
            encode(
                tokenizer,
                template,
                [{"role": "user", "content": f"{image_in_words(images[q['image']])}\n{q['text']}"}],
                add_generation_prompt=True,
            ).input_ids
            for q in chunk
        ]
        longest = max(map(len, prompts))
        pad = tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (longest - len(p)) + p for p in prompts])  # left-padded
        mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts])
        with torch.no_grad():
            out = language_model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=48,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
            )
        replies += tokenizer.batch_decode(out[:, longest:], skip_special_tokens=True)
    return replies
