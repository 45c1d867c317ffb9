"""Tiny real checkpoints for tests: transformers' own classes, random weights, written to folders.

Every folder here has the files a real Hugging Face checkpoint has (config.json, safetensors,
tokenizer.json, preprocessor_config.json), so tests exercise the same loading code as a real
CLIP-ViT-L/14-336 + Vicuna pair.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    SiglipVisionConfig,
    SiglipVisionModel,
)

CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "USER: What is in the image? ASSISTANT: A red circle and a blue square.",
    "How many objects are there? There are three objects.",
    "Describe the image briefly. A green triangle on a white background.",
    "What colour is the star? The star is yellow. Is there a cat? No.",
    "Human: Assistant: ### [INST] [/INST] <<SYS>> <</SYS>> system user assistant",
    "left right above below small large sign poster word text reads says",
    "0 1 2 3 4 5 6 7 8 9 yes no . , ? ! : ; ' \" ( ) \n",
]
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
TEXT_DIM = 32


def write_tokenizer(folder: Path, bos: bool = True) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a few sentences, with Llama-like special tokens."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    if bos:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
        )
    else:
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )
    fast.save_pretrained(folder)
    return fast


def write_llm(folder: Path, arch: str = "llama", seed: int = 0) -> Path:
    """A tiny causal LM of the given architecture, with its tokenizer, as an HF folder."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = write_tokenizer(folder, bos=arch == "llama")
    vocab = len(tokenizer)
    torch.manual_seed(seed)
    if arch == "llama":
        config = LlamaConfig(
            vocab_size=vocab,
            hidden_size=TEXT_DIM,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=3,
            tie_word_embeddings=False,
        )
        model = LlamaForCausalLM(config)
    elif arch == "qwen2":
        config = Qwen2Config(
            vocab_size=vocab,
            hidden_size=TEXT_DIM,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            eos_token_id=2,
            pad_token_id=3,
            tie_word_embeddings=True,
        )
        model = Qwen2ForCausalLM(config)
    elif arch == "gpt2":
        config = GPT2Config(
            vocab_size=vocab,
            n_embd=TEXT_DIM,
            n_layer=2,
            n_head=4,
            n_positions=512,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=3,
        )
        model = GPT2LMHeadModel(config)
    else:
        raise ValueError(arch)
    model.generation_config.pad_token_id = 3
    model.save_pretrained(folder)
    return folder


def write_preprocessor(folder: Path, size: int, mean, std, crop: bool = True) -> None:
    config = {
        "image_processor_type": "CLIPImageProcessor" if crop else "SiglipImageProcessor",
        "do_resize": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(mean),
        "image_std": list(std),
        "resample": 3 if crop else 2,
        "do_convert_rgb": True,
    }
    if crop:
        config |= {
            "size": {"shortest_edge": size},
            "do_center_crop": True,
            "crop_size": {"height": size, "width": size},
        }
    else:
        config |= {"size": {"height": size, "width": size}, "do_center_crop": False}
    (folder / "preprocessor_config.json").write_text(json.dumps(config, indent=2))


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def write_clip(folder: Path, image_size: int = 32, patch_size: int = 8, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=24,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        projection_dim=24,
    )
    CLIPVisionModel(config).save_pretrained(folder)
    write_preprocessor(folder, image_size, CLIP_MEAN, CLIP_STD, crop=True)
    return folder


def write_siglip(folder: Path, image_size: int = 32, patch_size: int = 8, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = SiglipVisionConfig(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=24,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
    )
    SiglipVisionModel(config).save_pretrained(folder)
    write_preprocessor(folder, image_size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), crop=False)
    return folder


COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 180, 30),
    "blue": (30, 30, 220),
    "yellow": (230, 220, 20),
}


def write_image_records(folder: Path, n: int = 24, seed: int = 0) -> dict[str, Path]:
    """Coloured-square images with a stage-1 caption file and a stage-2 conversation file."""
    import json
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    pretrain, instruct = [], []
    names = list(COLOURS)
    for i in range(n):
        colour = names[i % len(names)]
        image = Image.new("RGB", (40, 36), (255, 255, 255))
        x, y = rng.randint(0, 14), rng.randint(0, 10)
        ImageDraw.Draw(image).rectangle([x, y, x + 24, y + 24], fill=COLOURS[colour])
        image.save(images / f"{i}.png")
        pretrain.append(
            {
                "id": f"p{i}",
                "image": f"{i}.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nDescribe the image briefly."},
                    {"from": "gpt", "value": f"a {colour} square."},
                ],
            }
        )
        instruct.append(
            {
                "id": f"s{i}",
                "image": f"{i}.png",
                "conversations": [
                    {"from": "human", "value": "What colour is the square?\n<image>"},
                    {"from": "gpt", "value": f"The square is {colour}."},
                    {"from": "human", "value": "Is there a square?"},
                    {"from": "gpt", "value": "yes"},
                ],
            }
        )
    instruct.append(
        {
            "id": "text-only",
            "conversations": [
                {"from": "human", "value": "What is 2 + 2?"},
                {"from": "gpt", "value": "4"},
            ],
        }
    )
    paths = {
        "images": images,
        "pretrain": folder / "pretrain.json",
        "instruct": folder / "instruct.jsonl",
    }
    paths["pretrain"].write_text(json.dumps(pretrain))
    paths["instruct"].write_text("\n".join(json.dumps(r) for r in instruct))
    return paths


def tiny_recipe(
    model_config, data: dict[str, Path], out: Path, stage: str, *, data_fields=None, **train_fields
):
    """A short training stage on `write_image_records` data: plain template and caption records
    for `align`, vicuna_v1 and conversations for `instruct`; constant lr, a loss logged per step."""
    import dataclasses

    from llavakit.config import DataConfig, DataSource, RecipeConfig, TrainConfig

    align = stage == "align"
    model = dataclasses.replace(model_config, template="plain" if align else "vicuna_v1")
    source = DataSource(path=str(data["pretrain" if align else "instruct"]))
    fields = (
        dict(
            stage=stage,
            output_dir=str(out),
            per_device_batch_size=8,
            logging_steps=1,
            learning_rate=5e-3,
            warmup_ratio=0.0,
            lr_scheduler="constant",
            save_steps=1000,
        )
        | train_fields
    )
    return RecipeConfig(
        model=model,
        data=DataConfig(train=[source], image_folder=str(data["images"]), **(data_fields or {})),
        train=TrainConfig(**fields),
    )


def tiny_stage2_recipe(
    model_config, data: dict[str, Path], init_from: Path, out: Path, batch: int = 4, **train_fields
):
    """Stage 2 from a stage-1 checkpoint (the model comes from it): 4 steps, a checkpoint every
    2, as the distributed and resume tests compare runs."""
    import dataclasses

    recipe = tiny_recipe(
        model_config,
        data,
        out,
        "instruct",
        max_steps=4,
        save_steps=2,
        per_device_batch_size=batch,
        init_from=str(init_from),
        **train_fields,
    )
    recipe.model = dataclasses.replace(recipe.model, vision_tower="", language_model="")
    return recipe
