"""Stage 0: the world's tokenizer, tiny CLIP and tiny Llama train, and load like HF checkpoints."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from PIL import Image, ImageDraw

from llavakit.world.stage0 import train_clip, train_language_model, train_tokenizer
from llavakit.world.stage0.loop import LoopConfig, lr_at

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (40, 60, 220),
    "yellow": (235, 215, 30),
}
CAPTIONS = [
    "a red circle is left of a blue square.",
    "two green triangles sit on a white table.",
    "the yellow sign says OPEN 24 hours!",
    "three blue squares and one red circle.",
    "USER: What colour is the circle? ASSISTANT: The circle is red.</s>",
    "###Human: How many objects?###Assistant: There are 3 objects.###",
]
HELDOUT_CAPTIONS = [
    "a green circle is left of a red square.",
    "two yellow triangles sit on a table.",
]
WORLD_TEXT = [
    *CAPTIONS,
    "Describe the image in detail.\nThe image shows 2 objects: a red circle (left) and a blue square.",
    "USER: <image>\nWhat is written on the poster? ASSISTANT: SALE 50% off</s>",
    'The label reads "FRESH MILK", and the price is 3.99.',
]


def shape_image(colour: str, rng: random.Random, size: int = 40) -> Image.Image:
    """A square of one colour at a random place and size on a random light background."""
    background = tuple(rng.randint(200, 255) for _ in range(3))
    image = Image.new("RGB", (size, size), background)
    side = rng.randint(size // 3, size // 2)
    x, y = rng.randint(0, size - side), rng.randint(0, size - side)
    ImageDraw.Draw(image).rectangle([x, y, x + side, y + side], fill=COLOURS[colour])
    return image


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tokenizer")
    corpus = WORLD_TEXT * 20 + [f"a {colour} square" for colour in COLOURS] * 20
    train_tokenizer(corpus, out, vocab_size=400)
    return out


@pytest.fixture(scope="module")
def trained_clip(tokenizer_dir, tmp_path_factory):
    rng = random.Random(0)
    pairs = [
        (shape_image(colour, rng), f"a {colour} square") for _ in range(40) for colour in COLOURS
    ]
    out = tmp_path_factory.mktemp("clip")
    metrics = train_clip(
        pairs,
        tokenizer_dir,
        out,
        image_size=32,
        patch_size=8,
        hidden_size=32,
        vision_layers=2,
        text_layers=1,
        heads=2,
        steps=60,
        batch_size=16,
        lr=3e-3,
        heldout_fraction=0.2,
        progress=False,
        threads=1,
    )
    return out, metrics


@pytest.fixture(scope="module")
def trained_lm(tokenizer_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("lm")
    metrics = train_language_model(
        CAPTIONS,
        tokenizer_dir,
        out,
        hidden_size=64,
        layers=2,
        heads=2,
        steps=120,
        seq_len=32,
        batch_size=8,
        lr=3e-3,
        heldout_texts=HELDOUT_CAPTIONS,
        progress=False,
        threads=1,
    )
    return out, metrics


def test_tokenizer_round_trips_world_text_and_prepends_bos(tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    assert (tokenizer.pad_token_id, tokenizer.unk_token_id) == (0, 1)
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (2, 3)
    unseen = ["  Two spaces, a tab\tand trailing newline\n", "Ünïcödé ✓ 12345 #1!?"]
    for text in [*WORLD_TEXT, *unseen]:
        ids = tokenizer(text)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id
        assert tokenizer.decode(ids[1:]) == text
        assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_tokenizer_keeps_specials_whole_words_intact_and_digits_apart(tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    ids = tokenizer("is red.</s>USER:", add_special_tokens=False)["input_ids"]
    assert tokenizer.eos_token_id in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "is red.USER:"
    assert tokenizer.tokenize(" circle square") == ["Ġcircle", "Ġsquare"]
    assert tokenizer.tokenize("24") == ["2", "4"]
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert config["add_bos_token"] is True


def test_tokenizer_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(["a"], tmp_path, vocab_size=100)
    with pytest.raises(TypeError, match="item 1"):
        train_tokenizer(["a", 3], tmp_path, vocab_size=300)


def test_clip_learns_colours_and_beats_chance_on_heldout_images(trained_clip):
    _, metrics = trained_clip
    assert metrics["steps"] == 60 and not metrics["stopped_by_budget"]
    assert metrics["loss_final"] < 0.6 * metrics["loss_first"]
    assert metrics["n_heldout_pairs"] == 32
    assert metrics["retrieval_chance"] < 0.35
    assert metrics["retrieval_top1"] >= 0.85


def test_clip_folder_loads_like_openai_clip(trained_clip, tokenizer_dir):
    from transformers import (
        AutoTokenizer,
        CLIPImageProcessor,
        CLIPModel,
        CLIPVisionModel,
    )

    out, _ = trained_clip
    vision, info = CLIPVisionModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"]
    processor = CLIPImageProcessor.from_pretrained(out)
    assert list(processor.image_mean) == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    image = shape_image("blue", random.Random(5), size=57)
    pixels = processor(images=image, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 32, 32)
    with torch.no_grad():
        hidden = vision(pixel_values=pixels, output_hidden_states=True).hidden_states
    assert len(hidden) == 3 and hidden[-2].shape == (1, 1 + 16, 32)  # CLS + (32/8)^2 patches

    clip = CLIPModel.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(tokenizer) == len(AutoTokenizer.from_pretrained(tokenizer_dir))
    captions = [f"a {colour} square</s>" for colour in COLOURS]
    text = tokenizer(captions, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = clip(**text, pixel_values=pixels).logits_per_image  # (1, 4)
    assert captions[logits.argmax().item()] == "a blue square</s>"


def test_clip_reports_bad_pairs_by_index(tokenizer_dir, tmp_path):
    image = Image.new("RGB", (8, 8))
    with pytest.raises(FileNotFoundError, match="pair 1"):
        train_clip([(image, "a"), (tmp_path / "missing.png", "b")], tokenizer_dir, tmp_path)
    with pytest.raises(ValueError, match="pair 0: caption"):
        train_clip([(image, " "), (image.copy(), "b")], tokenizer_dir, tmp_path)
    with pytest.raises(ValueError, match="at least 2 distinct images"):
        train_clip([(image, "a"), (image, "b")], tokenizer_dir, tmp_path)


def test_clip_accepts_image_paths(tokenizer_dir, tmp_path):
    paths = []
    for index, colour in enumerate(COLOURS):
        path = tmp_path / f"{index}.png"
        shape_image(colour, random.Random(index)).save(path)
        paths.append((path, f"a {colour} square"))
    metrics = train_clip(
        paths, tokenizer_dir, tmp_path / "clip", image_size=16, hidden_size=16, vision_layers=1,
        text_layers=1, heads=1, steps=2, batch_size=4, heldout_fraction=0, threads=1,
        progress=False,
    )  # fmt: skip
    assert metrics["n_images"] == 4 and metrics["retrieval_top1"] is None


def test_language_model_memorises_captions_and_loads_like_an_hf_llm(trained_lm):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, metrics = trained_lm
    assert metrics["loss_final"] < 0.25 * metrics["loss_first"]
    assert metrics["heldout_loss"] is not None and metrics["n_heldout_texts"] == 2
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.model_type == "llama" and model.config.tie_word_embeddings
    for caption in CAPTIONS[:4]:
        prefix = " ".join(caption.split()[:2])
        inputs = tokenizer(prefix, return_tensors="pt")
        generated = model.generate(**inputs, max_new_tokens=24, do_sample=False)[0]
        assert tokenizer.decode(generated, skip_special_tokens=True) == caption
        assert generated[-1].item() == tokenizer.eos_token_id


def test_language_model_is_seeded_and_honours_time_budget(tokenizer_dir, tmp_path):
    tiny = dict(
        hidden_size=16, layers=1, heads=1, seq_len=16, batch_size=2, progress=False, threads=1
    )
    first = train_language_model(WORLD_TEXT, tokenizer_dir, tmp_path / "a", steps=3, **tiny)
    again = train_language_model(WORLD_TEXT, tokenizer_dir, tmp_path / "b", steps=3, **tiny)
    assert first["losses"] == again["losses"]
    budgeted = train_language_model(
        WORLD_TEXT, tokenizer_dir, tmp_path / "c", steps=100_000, time_budget_s=0.3, **tiny
    )
    assert budgeted["stopped_by_budget"] and 1 <= budgeted["steps"] < 100_000
    # bf16 autocast (the forward pass only): its own losses, float32 weights saved.
    bf16 = train_language_model(
        WORLD_TEXT, tokenizer_dir, tmp_path / "d", steps=3, precision="bf16", **tiny
    )
    assert bf16["losses"] != first["losses"] and all(map(math.isfinite, bf16["losses"]))
    saved = json.loads((tmp_path / "d" / "config.json").read_text())
    assert saved.get("dtype", saved.get("torch_dtype")) == "float32"


def test_learning_rate_warms_up_then_decays_to_its_floor():
    config = LoopConfig(steps=100, peak_lr=1.0, warmup_fraction=0.1, min_lr_fraction=0.1)
    assert lr_at(0.05, config) == pytest.approx(0.5)
    assert lr_at(0.1, config) == pytest.approx(1.0)
    assert lr_at(0.55, config) == pytest.approx(0.55)
    assert lr_at(1.0, config) == pytest.approx(0.1)


def test_clip_patch_probes_learn_where_the_colour_is_and_are_not_saved(tokenizer_dir, tmp_path):
    """Patch labels: 1 + colour index where the square is, 0 elsewhere (32 px, 8 px patches)."""
    from safetensors import safe_open

    rng = random.Random(1)
    pairs, labels = [], {}
    names = list(COLOURS)
    for index in range(120):
        colour = names[index % len(names)]
        image = Image.new("RGB", (32, 32), (240, 240, 240))
        col, row = rng.randrange(4), rng.randrange(4)
        ImageDraw.Draw(image).rectangle(
            [8 * col, 8 * row, 8 * col + 7, 8 * row + 7], COLOURS[colour]
        )
        path = tmp_path / f"{index}.png"
        image.save(path)
        pairs.append((path, f"a {colour} square"))
        grid = torch.zeros(16, 1, dtype=torch.long)
        grid[4 * row + col, 0] = 1 + names.index(colour)
        labels[str(path)] = grid
    common = dict(
        image_size=32, patch_size=8, hidden_size=32, vision_layers=2, text_layers=1, heads=2,
        batch_size=16, lr=3e-3, heldout_fraction=0.25, progress=False, threads=1,
    )  # fmt: skip
    metrics = train_clip(
        pairs, tokenizer_dir, tmp_path / "clip", steps=80, patch_labels=labels,
        label_classes={"colour": 1 + len(names)}, **common,
    )  # fmt: skip
    assert metrics["region_accuracy"]["colour"] > 0.97  # background dominates; see below
    with safe_open(str(tmp_path / "clip" / "model.safetensors"), framework="pt") as weights:
        assert not [key for key in weights.keys() if "probe" in key or "heads" in key]
    untrained = train_clip(pairs, tokenizer_dir, tmp_path / "plain", steps=2, **common)
    assert untrained["region_accuracy"] is None


def test_language_model_learns_replies_not_prompts(tokenizer_dir, tmp_path):
    """Replies are trained, prompts are not: after training, the model predicts the replies of
    a conversation it saw 160 times, but still not the words of its prompt."""
    from transformers import AutoModelForCausalLM

    from llavakit.conversation import encode

    fruit = {"red": "apple", "green": "pear", "blue": "plum", "yellow": "lemon"}
    conversations = [
        [
            {"role": "user", "content": f"Which fruit is {colour}? Name it in two words."},
            {"role": "assistant", "content": f"The {name}."},
        ]
        for colour, name in fruit.items()
    ] * 40
    metrics = train_language_model(
        CAPTIONS, tokenizer_dir, tmp_path / "lm", hidden_size=64, layers=2, heads=2, steps=60,
        seq_len=256, batch_size=8, lr=3e-3, conversations=conversations, progress=False,
        threads=1, precision="auto",
    )  # fmt: skip
    assert metrics["n_train_conversations"] == 160
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "lm")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "lm")
    encoded = encode(tokenizer, "vicuna_v1", conversations[0])
    ids = torch.tensor([encoded.input_ids])
    with torch.no_grad():
        losses = torch.nn.functional.cross_entropy(
            model(input_ids=ids).logits[0, :-1], ids[0, 1:], reduction="none"
        )
    trained = torch.tensor(encoded.labels[1:]) != -100
    question = tokenizer("Which fruit is red? Name it in two words.").input_ids[1:]
    prompt_start = next(
        i
        for i in range(len(encoded.input_ids))
        if encoded.input_ids[i : i + len(question)] == question
    )
    prompt = torch.zeros_like(trained)
    prompt[prompt_start : prompt_start + len(question) - 1] = True
    assert losses[trained].mean() < 1.0  # about ln 4 on the fruit itself, ~0 elsewhere
    assert losses[prompt].mean() > 3 * losses[trained].mean()


def test_curriculum_raises_its_ceiling_one_level_at_a_time_then_lifts_it():
    from llavakit.world.stage0.lm import Curriculum

    schedule = Curriculum([0, 1, 2, 3, 5], fraction=0.4)
    # Four levels above the easiest climb over the first 40%: 10% each.
    seen = [schedule.ceiling(p) for p in (0.0, 0.05, 0.15, 0.25, 0.35, 0.39, 0.4, 0.9)]
    assert seen == [1, 1, 2, 3, 5, 5, None, None]
    assert Curriculum([0, 1, 2], fraction=0.0).ceiling(0.0) is None  # no curriculum
    assert Curriculum([0], fraction=0.5).ceiling(0.0) is None  # one level: nothing to order
    with pytest.raises(ValueError, match="curriculum_fraction"):
        Curriculum([0, 1], fraction=1.5)


def test_windows_start_only_at_samples_under_the_ceiling():
    from llavakit.world.stage0.lm import _Stream

    # Sample k is k+1 tokens long, every token k; its difficulty is k % 4.
    samples = [([k] * (k + 1), [k] * (k + 1)) for k in range(40)]
    stream = _Stream(samples, [k % 4 for k in range(40)])
    generator = torch.Generator().manual_seed(0)
    capped, _ = stream.windows(200, 3, generator, ceiling=1)  # (200, 3)
    assert {k % 4 for k in capped[:, 0].tolist()} == {0, 1}
    free, _ = stream.windows(200, 3, generator)
    assert {k % 4 for k in free[:, 0].tolist()} == {0, 1, 2, 3}


def test_language_model_checks_difficulties_against_conversations(tokenizer_dir, tmp_path):
    conversation = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hi."}]
    tiny = dict(hidden_size=16, layers=1, heads=1, seq_len=16, batch_size=2, steps=2)
    with pytest.raises(ValueError, match="difficulties: 1 given for 2 conversations"):
        train_language_model(
            WORLD_TEXT, tokenizer_dir, tmp_path / "a", conversations=[conversation] * 2,
            difficulties=[1], progress=False, **tiny,
        )  # fmt: skip
    metrics = train_language_model(
        WORLD_TEXT, tokenizer_dir, tmp_path / "b", conversations=[conversation] * 2,
        difficulties=[1, 3], curriculum_fraction=0.5, progress=False, **tiny,
    )  # fmt: skip
    assert metrics["steps"] == 2
