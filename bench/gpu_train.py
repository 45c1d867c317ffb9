"""Stage-2 step throughput on one GPU at real model shapes: llavakit against transformers' LLaVA.

Random-initialised models of real shape in bf16: the CLIP ViT-L/14-336 tower (frozen) with an
mlp2x_gelu projector, and either a Qwen2-1.5B-shaped LLM trained in full, or a Llama-7B
(Vicuna-7B) shaped LLM with LoRA (r=128, alpha=256 on every linear layer, as LLaVA-1.5's LoRA
recipe). The data is synthetic token sequences shaped like LLaVA-1.5's 665K mixture at
max length 2048 with 576 image tokens (see `synthetic_sample`); both contenders see the same
samples, 16 per optimiser step, with the same AdamW.

- llavakit: `LlavaModel`, each step's samples packed into rows of 2048 (first-fit decreasing),
  block-diagonal attention through SDPA, logits only at trained positions.
- baseline: `LlavaForConditionalGeneration` + pad-to-longest batches, its own loss over full
  logits; both normalise the loss over the step's trained tokens (num_items_in_batch).

Each contender takes the largest micro-batch (samples per forward, gradients accumulated to 16)
that fits, halving on out-of-memory. Reported per contender: samples/s, non-padding tokens/s,
peak GPU memory, and MFU = model FLOPs / time / 989 TFLOP/s (H100 dense bf16). Model FLOPs per
sample of T tokens with I images: 6·N·T for trained LLM weights, 4·N·T for frozen ones under
LoRA (forward + input gradient) plus 6·N_lora·T, where N excludes the input embedding table and
includes the output head; causal attention 6·L·d·T²; the frozen tower's forward
(2·N_tower·577 + 4·L·d·577² per image) and the projector (6·N_proj·576 per image). Padding, the
baseline's logits at untrained positions and recomputation earn nothing.

    PYTHONPATH=. python bench/gpu_train.py                    # both setups, on CUDA
    PYTHONPATH=. python bench/gpu_train.py --tiny             # CPU smoke test of the script
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

PEAK_FLOPS = 989e12  # H100 SXM dense bf16
GLOBAL_BATCH = 16
IMAGE_ID = 5  # any id the synthetic text never uses (text ids start at 100)


@dataclass
class Shape:
    """One benchmark setup: tower, LLM and how it trains."""

    name: str
    llm_type: str  # "qwen2" or "llama"
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tie_embeddings: bool
    lora: bool
    max_length: int = 2048
    image_size: int = 336
    patch: int = 14
    tower_hidden: int = 1024
    tower_intermediate: int = 4096
    tower_layers: int = 24
    tower_heads: int = 16


SHAPES = {
    "1.5b-full": Shape("Qwen2-1.5B full", "qwen2", 1536, 8960, 28, 12, 2, 151936, True, False),
    "7b-lora": Shape("Llama-7B LoRA", "llama", 4096, 11008, 32, 32, 32, 32000, False, True),
}
# Samples per forward that fit an 80 GB H100 (a first guess; halved on out-of-memory).
MICRO_BATCHES = {
    "Qwen2-1.5B full": {"llavakit": 16, "llavakit padded": 4, "baseline": 4},
    "Llama-7B LoRA": {"llavakit": 8, "llavakit padded": 4, "baseline": 4},
}
TINY = {  # CPU smoke tests of both training modes
    "tiny": Shape("tiny", "qwen2", 64, 128, 2, 4, 2, 512, True, False, 256, 56, 14, 32, 64, 2, 2),
    "tiny LoRA": Shape(
        "tiny LoRA", "llama", 64, 128, 2, 4, 4, 512, False, True, 256, 56, 14, 32, 64, 2, 2
    ),
}


# ---- data ----------------------------------------------------------------------------------
def synthetic_sample(rng: random.Random, shape: Shape):
    """Token counts shaped like LLaVA-665K: 70% VQA (1-6 questions, 1-5 token answers), 24%
    LLaVA-Instruct (conversations, detail, reasoning), 6% long text-only chats; ~35-token system
    prompt; one image of (image_size/patch)^2 placeholders; cut at max_length."""
    from llavakit.processor import IGNORE_INDEX, EncodedSample

    n_image = (shape.image_size // shape.patch) ** 2
    kind = rng.choices(("vqa", "conversation", "detail", "reasoning", "text"), (70, 12, 5, 7, 6))[0]
    turns = {
        "vqa": lambda: [(rng.randint(12, 25), rng.randint(1, 5)) for _ in range(rng.randint(1, 6))],
        "conversation": lambda: [
            (rng.randint(10, 30), rng.randint(40, 200)) for _ in range(rng.randint(2, 5))
        ],
        "detail": lambda: [(12, rng.randint(100, 250))],
        "reasoning": lambda: [(rng.randint(20, 40), rng.randint(100, 300))],
        "text": lambda: [
            (rng.randint(20, 200), rng.randint(50, 400)) for _ in range(rng.randint(1, 8))
        ],
    }[kind]()
    scale = shape.max_length / 2048
    ids = [1] + [rng.randrange(100, shape.vocab) for _ in range(int(35 * scale))]
    labels = [IGNORE_INDEX] * len(ids)
    if kind != "text":
        ids += [IMAGE_ID] * n_image
        labels += [IGNORE_INDEX] * n_image
    for prompt, answer in turns:
        prompt, answer = max(1, int(prompt * scale)), max(1, int(answer * scale))
        text = [rng.randrange(100, shape.vocab) for _ in range(prompt + answer)]
        ids += text
        labels += [IGNORE_INDEX] * prompt + text[prompt:]
    # The image sits right after the system prompt, so cutting at max_length never splits it.
    ids, labels = ids[: shape.max_length], labels[: shape.max_length]
    pixels = None
    if kind != "text":
        generator = np.random.default_rng(rng.randrange(2**31))
        pixels = generator.standard_normal((1, 3, shape.image_size, shape.image_size), np.float32)
    sizes = [(shape.image_size, shape.image_size)] if pixels is not None else []
    return EncodedSample(ids, labels, pixels, sizes)


def steps_of_samples(shape: Shape, n_steps: int, seed: int = 0) -> list[list]:
    rng = random.Random(seed)
    return [[synthetic_sample(rng, shape) for _ in range(GLOBAL_BATCH)] for _ in range(n_steps)]


# ---- models --------------------------------------------------------------------------------
def configs(shape: Shape):
    from transformers import CLIPVisionConfig, LlamaConfig, Qwen2Config

    text_class = Qwen2Config if shape.llm_type == "qwen2" else LlamaConfig
    text = text_class(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=shape.tie_embeddings,
        pad_token_id=0,
    )
    vision = CLIPVisionConfig(
        hidden_size=shape.tower_hidden,
        intermediate_size=shape.tower_intermediate,
        num_hidden_layers=shape.tower_layers,
        num_attention_heads=shape.tower_heads,
        image_size=shape.image_size,
        patch_size=shape.patch,
        projection_dim=768,
    )
    return vision, text


def build_llavakit(shape: Shape, dtype, device):
    from transformers import AutoModelForCausalLM, CLIPVisionModel

    from llavakit.config import LoraSettings, ModelConfig, TrainConfig
    from llavakit.model.llava import LlavaModel
    from llavakit.model.projector import build_projector
    from llavakit.model.vision import VisionTower
    from llavakit.train.stages import apply_stage

    vision, text = configs(shape)
    with torch.device(device):
        tower = VisionTower(CLIPVisionModel._from_config(vision, dtype=dtype), -2, "patch")
        llm = AutoModelForCausalLM.from_config(text, dtype=dtype, attn_implementation="sdpa")
        projector = build_projector("mlp2x_gelu", shape.tower_hidden, shape.hidden).to(dtype)
    config = ModelConfig(projector_type="mlp2x_gelu", max_length=shape.max_length)
    model = LlavaModel(config, tower, projector, llm, IMAGE_ID)
    lora = LoraSettings(r=128, alpha=256, dropout=0.05) if shape.lora else None
    apply_stage(model, TrainConfig(stage="instruct", lora=lora))
    return model.to(device)


def build_baseline(shape: Shape, dtype, device):
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    vision, text = configs(shape)
    config = LlavaConfig(
        vision_config=vision.to_dict(),
        text_config=text.to_dict(),
        image_token_id=IMAGE_ID,
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(
            config, dtype=dtype, attn_implementation="sdpa"
        )
    model.model.vision_tower.requires_grad_(False)
    if shape.lora:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=128,
            lora_alpha=256,
            lora_dropout=0.05,
            target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
        )
        model = get_peft_model(model, lora)
        for name, parameter in model.named_parameters():
            if "multi_modal_projector" in name:
                parameter.requires_grad_(True)
    return model.to(device)


# ---- batches -------------------------------------------------------------------------------
def llavakit_batches(samples, micro: int, shape: Shape):
    from llavakit.data.collate import PackingCollator

    collate = PackingCollator(pad_token_id=0, max_length=shape.max_length)
    return [collate(samples[i : i + micro]) for i in range(0, len(samples), micro)]


def baseline_batches(samples, micro: int, shape: Shape):
    from llavakit.data.collate import collate_samples

    batches = []
    for i in range(0, len(samples), micro):
        batch = collate_samples(samples[i : i + micro], pad_token_id=0)
        batch.pop("image_sizes", None)
        batches.append(batch)
    return batches


def llavakit_padded_batches(samples, micro: int, shape: Shape):
    from llavakit.data.collate import Collator

    collate = Collator(pad_token_id=0)
    return [collate(samples[i : i + micro]) for i in range(0, len(samples), micro)]


# contender: (model builder, batch maker, loss at trained positions only)
CONTENDERS = {
    "llavakit": (build_llavakit, llavakit_batches, True),
    "llavakit padded": (build_llavakit, llavakit_padded_batches, True),
    "baseline": (build_baseline, baseline_batches, False),
}


# ---- FLOPs ---------------------------------------------------------------------------------
def model_flops(shape: Shape, samples, n_lora: int, n_llm: int, n_tower: int, n_proj: int):
    """Useful FLOPs of one step's samples (see the module docstring)."""
    n_image = (shape.image_size // shape.patch) ** 2
    weight_factor = 4 if shape.lora else 6
    total = 0.0
    for sample in samples:
        t = len(sample.input_ids)
        total += (
            weight_factor * n_llm * t + 6 * n_lora * t + 6 * shape.layers * shape.hidden * t * t
        )
        if sample.pixel_values is not None:
            tokens = n_image + 1
            total += 2 * n_tower * tokens + 4 * shape.tower_layers * shape.tower_hidden * tokens**2
            total += 6 * n_proj * n_image
    return total


def parameter_counts(model, shape: Shape) -> tuple[int, int, int, int]:
    """(LLM weights without the input embedding table but with the output head, LoRA weights,
    tower weights, projector weights); a tied table counts once, as the head."""
    llm, lora, tower, proj = 0, 0, 0, 0
    for name, parameter in model.named_parameters():  # tied weights appear once
        n = parameter.numel()
        if "lora_" in name:
            lora += n
        elif "vision_tower" in name:
            tower += n
        elif "projector" in name:
            proj += n
        else:
            llm += n
    if not shape.tie_embeddings:
        llm -= shape.vocab * shape.hidden  # the input table does no matrix multiply
    return llm, lora, tower, proj


# ---- one contender -------------------------------------------------------------------------
def run(contender: str, shape: Shape, steps: list[list], warmup: int, micro: int, device, dtype):
    build, make_batches, loss_only = CONTENDERS[contender]
    torch.manual_seed(0)
    model = build(shape, dtype, device)
    model.train()
    counts = parameter_counts(model, shape)
    trainable = [p for p in model.parameters() if p.requires_grad]
    fused = device.type == "cuda"
    optimizer = torch.optim.AdamW(trainable, lr=2e-5, weight_decay=0.0, fused=fused)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for step, samples in enumerate(steps):
        batches = make_batches(samples, micro, shape)
        n_items = sum(sum(label != -100 for label in s.labels[1:]) for s in samples)
        _sync(device)
        start = time.perf_counter()
        total = 0.0
        for batch in batches:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            if "pixel_values" in batch:
                batch["pixel_values"] = batch["pixel_values"].to(dtype)
            extra = {"loss_only": True} if loss_only else {}
            loss = model(**batch, num_items_in_batch=n_items, **extra).loss
            loss.backward()
            total += loss.detach()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        if step >= warmup:
            times.append(time.perf_counter() - start)
        losses.append(float(total))
    timed = steps[warmup:]
    seconds = sum(times)
    flops = sum(model_flops(shape, s, counts[1], counts[0], counts[2], counts[3]) for s in timed)
    tokens = sum(len(x.input_ids) for s in timed for x in s)
    result = {
        "contender": contender,
        "setup": shape.name,
        "micro_batch": micro,
        "samples_per_s": GLOBAL_BATCH * len(timed) / seconds,
        "tokens_per_s": tokens / seconds,
        "mfu": flops / seconds / PEAK_FLOPS,
        "step_s_median": statistics.median(times),
        "peak_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0,
        "first_loss": losses[0],
        "parameters": dict(zip(("llm", "lora", "tower", "projector"), counts)),
    }
    del model, optimizer, trainable
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_fitting(contender, shape, steps, warmup, micro, device, dtype):
    """Run with the given micro-batch, halving it while the GPU runs out of memory."""
    while True:
        try:
            return run(contender, shape, steps, warmup, micro, device, dtype)
        except torch.OutOfMemoryError:
            gc.collect()
            torch.cuda.empty_cache()
            if micro == 1:
                raise
            print(
                f"{contender} {shape.name}: out of memory at micro-batch {micro}", file=sys.stderr
            )
            micro //= 2


def table(results: list[dict]) -> str:
    lines = [
        "| setup | contender | micro-batch | samples/s | tokens/s | MFU | vs baseline | peak GB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = {r["setup"]: r["tokens_per_s"] for r in results if r["contender"] == "baseline"}
    for r in results:
        ratio = r["tokens_per_s"] / base[r["setup"]] if r["setup"] in base else float("nan")
        lines.append(
            f"| {r['setup']} | {r['contender']} | {r['micro_batch']} | "
            f"{r['samples_per_s']:.1f} | {r['tokens_per_s']:.0f} | {r['mfu']:.1%} | "
            f"{ratio:.2f}x | {r['peak_gb']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setups", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--steps", type=int, default=8, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--micro",
        type=json.loads,
        default=MICRO_BATCHES,
        help="samples per forward per setup and contender, as JSON (halved on out-of-memory)",
    )
    parser.add_argument(
        "--contenders", nargs="+", default=["llavakit", "baseline"], choices=list(CONTENDERS)
    )
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on CPU (smoke test)")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    if args.tiny:
        device, dtype, shapes = torch.device("cpu"), torch.float32, list(TINY.values())
    else:
        device, dtype = torch.device("cuda"), torch.bfloat16
        shapes = [SHAPES[name] for name in args.setups]
        torch.backends.cuda.matmul.allow_tf32 = True
        print(torch.cuda.get_device_name(), torch.__version__, file=sys.stderr)
    results = []
    for shape in shapes:
        steps = steps_of_samples(shape, args.warmup + args.steps)
        lengths = [len(s.input_ids) for step in steps for s in step]
        print(
            f"{shape.name}: mean sample {statistics.mean(lengths):.0f} tokens, "
            f"{sum(n >= shape.max_length for n in lengths) / len(lengths):.0%} at max length",
            file=sys.stderr,
        )
        for contender in args.contenders:
            micro = args.micro.get(shape.name, {}).get(contender, 4)
            result = run_fitting(contender, shape, steps, args.warmup, micro, device, dtype)
            results.append(result)
            print(json.dumps(result), file=sys.stderr, flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    print(table(results))


if __name__ == "__main__":
    main()
