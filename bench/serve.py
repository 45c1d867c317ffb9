"""Serving throughput: `llavakit serve` under concurrent load against transformers one at a time.

Baseline: transformers' own `LlavaForConditionalGeneration.generate`, loaded from the folder
`llavakit export-hf` writes for the same checkpoint, answering the same requests one after the
other (greedy, batch 1), prompts built by the exported `AutoProcessor` and its chat template.
llavakit: the `llavakit serve` command in a subprocess, driven by the official `openai` client
with 1, 8 and 32 requests in flight (closed loop: each client sends its next request when its
previous answer arrives), images sent as PNG data URLs as real clients do. Same model, same
prompts, same max_tokens, in the same run; the table shows requests/s, generated tokens/s,
p50/p95 latency, the server's mean batch size, and throughput relative to the baseline.

The model has random weights and a bit more than the test model's size (CLIP 112 px / patch 14 /
width 192 / 4 layers, 64 image tokens; Llama width 256 / 4 layers, ~1k vocabulary), so that a
forward pass costs enough for batching to matter. Greedy answers of both sides are compared.

Torch runs on `--threads` threads on both sides (default 1: on a small shared machine more
threads than free cores makes every matrix product wait for the slowest thread).

    python bench/serve.py                               # concurrency 1, 8, 32
    python bench/serve.py --concurrency 1 8 --max-tokens 32 --workdir /tmp/serve-bench
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SEED = 0
QUESTIONS = (
    "What is in the image?",
    "Describe the image in detail.",
    "How many objects are there, and what colours are they?",
    "What is the shape on the left?",
    "Is there anything unusual about this picture?",
    "Where is the largest object?",
)


@dataclass
class Sample:
    question: str
    image_path: Path


@dataclass
class Measured:
    """One run: wall time, per-request latencies and generated token counts, answers."""

    wall_s: float
    latencies_s: list[float]
    tokens: list[int]
    answers: list[str]
    mean_batch: float | None = None

    def row(self, name: str, concurrency: int, baseline: Measured | None) -> dict:
        n = len(self.latencies_s)
        latencies = sorted(self.latencies_s)
        row = {
            "system": name,
            "concurrency": concurrency,
            "requests": n,
            "requests_per_s": n / self.wall_s,
            "tokens_per_s": sum(self.tokens) / self.wall_s,
            "p50_latency_s": statistics.median(latencies),
            "p95_latency_s": latencies[min(n - 1, round(0.95 * (n - 1)))],
            "mean_batch": self.mean_batch,
        }
        if baseline is not None:
            base = sum(baseline.tokens) / baseline.wall_s
            row["speedup_tokens_per_s"] = row["tokens_per_s"] / base
            row["speedup_requests_per_s"] = row["requests_per_s"] / (
                len(baseline.latencies_s) / baseline.wall_s
            )
        return row


# ---- model and data ------------------------------------------------------------------------
def write_checkpoint(workdir: Path) -> Path:
    """A random-weight CLIP + Llama llavakit checkpoint of the bench's sizes."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    from llavakit.config import ModelConfig
    from llavakit.conversation import get_template
    from llavakit.image_config import ImageProcessorConfig
    from llavakit.model.io import build_model, save_checkpoint
    from llavakit.world.stage0.tokenizer import train_tokenizer

    torch.manual_seed(SEED)
    llm_dir, clip_dir = workdir / "llm", workdir / "clip"
    system = get_template("vicuna_v1").system
    corpus = [f"{system} USER: {q} ASSISTANT: A red circle.</s>" for q in QUESTIONS] * 20
    tokenizer = train_tokenizer(corpus, llm_dir, vocab_size=1000)
    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=256,
            intermediate_size=688,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=2048,
            tie_word_embeddings=False,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    ).save_pretrained(llm_dir)
    CLIPVisionModel(
        CLIPVisionConfig(
            image_size=112,
            patch_size=14,
            hidden_size=192,
            intermediate_size=768,
            num_hidden_layers=4,
            num_attention_heads=4,
            projection_dim=192,
        )
    ).save_pretrained(clip_dir)
    ImageProcessorConfig(size=112, crop_size=112).save_pretrained(clip_dir)  # CLIP mean/std
    config = ModelConfig(
        vision_tower=str(clip_dir),
        language_model=str(llm_dir),
        template="vicuna_v1",
        max_length=1024,
    )
    model, processor = build_model(config)
    return save_checkpoint(model, processor, workdir / "checkpoint")


def write_samples(workdir: Path, n: int) -> list[Sample]:
    from llavakit.world.scenes import render_scene

    folder = workdir / "images"
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    samples = []
    for i in range(n):
        image, _ = render_scene(rng, i, f"{i}.png")
        image.save(folder / f"{i}.png")
        samples.append(Sample(QUESTIONS[i % len(QUESTIONS)], folder / f"{i}.png"))
    return samples


# ---- baseline: transformers, one request at a time ------------------------------------------
def run_baseline(hf_dir: Path, samples: list[Sample], max_tokens: int) -> Measured:
    import torch
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(hf_dir)
    model = LlavaForConditionalGeneration.from_pretrained(hf_dir, dtype=torch.float32).eval()

    def answer(sample: Sample) -> tuple[str, int]:
        image = Image.open(sample.image_path).convert("RGB")
        messages = [
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "text", "text": sample.question}],
            }
        ]
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = processor(images=image, text=prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False)
        new = out[0, inputs["input_ids"].shape[1] :].tolist()
        eos = model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos])
        new = new[: next((i for i, t in enumerate(new) if t in eos), len(new))]
        return processor.tokenizer.decode(new, skip_special_tokens=True).strip(), len(new)

    answer(samples[0])  # warm-up
    latencies, tokens, answers = [], [], []
    started = time.perf_counter()
    for sample in samples:
        begin = time.perf_counter()
        text, count = answer(sample)
        latencies.append(time.perf_counter() - begin)
        tokens.append(count)
        answers.append(text)
    return Measured(time.perf_counter() - started, latencies, tokens, answers)


# ---- llavakit serve under load ---------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(checkpoint: Path, port: int, args: argparse.Namespace, log: Path):
    import httpx

    command = [sys.executable, "-m", "llavakit", "serve", str(checkpoint), "--port", str(port)]
    command += ["--max-batch-size", "32", "--batch-window-ms", str(args.batch_window_ms)]
    command += ["--max-concurrent", "256"]
    command += [
        "--max-tokens",
        str(args.max_tokens),
        "--device",
        "cpu",
        "--served-model-name",
        "bench",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    process.terminate()
    raise RuntimeError(f"the server did not start in 180 s; see {log}")


def data_url(path: Path) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


async def load_test(
    base_url: str, samples: list[Sample], concurrency: int, max_tokens: int
) -> Measured:
    import openai

    urls = {s.image_path: data_url(s.image_path) for s in samples}
    latencies = [0.0] * len(samples)
    tokens = [0] * len(samples)
    answers = [""] * len(samples)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(samples)):
        queue.put_nowait(index)

    async with openai.AsyncOpenAI(
        base_url=base_url, api_key="none", max_retries=0, timeout=600
    ) as client:

        async def ask(index: int) -> None:
            sample = samples[index]
            content = [
                {"type": "image_url", "image_url": {"url": urls[sample.image_path]}},
                {"type": "text", "text": sample.question},
            ]
            begin = time.perf_counter()
            response = await client.chat.completions.create(
                model="bench",
                messages=[{"role": "user", "content": content}],
                max_tokens=max_tokens,
                temperature=0,
            )
            latencies[index] = time.perf_counter() - begin
            tokens[index] = response.usage.completion_tokens
            answers[index] = response.choices[0].message.content

        async def client_loop() -> None:
            while not queue.empty():
                await ask(queue.get_nowait())

        started = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return Measured(wall, latencies, tokens, answers)


def batch_sizes(base_url: str) -> tuple[int, int]:
    """(batches, requests in them) so far, from the server's /metrics."""
    import httpx

    metrics = httpx.get(base_url.removesuffix("/v1") + "/metrics").json()
    histogram = metrics["batch_size_histogram"]
    return metrics["batches"], sum(int(size) * count for size, count in histogram.items())


# ---- report --------------------------------------------------------------------------------
def table(rows: list[dict]) -> str:
    lines = [
        "| system | concurrency | requests | req/s | tokens/s | p50 latency s | p95 latency s "
        "| mean batch | x baseline (tokens/s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        batch = "-" if r["mean_batch"] is None else f"{r['mean_batch']:.1f}"
        speedup = f"{r['speedup_tokens_per_s']:.2f}" if "speedup_tokens_per_s" in r else "1.00"
        lines.append(
            f"| {r['system']} | {r['concurrency']} | {r['requests']} | "
            f"{r['requests_per_s']:.2f} | {r['tokens_per_s']:.1f} | {r['p50_latency_s']:.2f} | "
            f"{r['p95_latency_s']:.2f} | {batch} | {speedup} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--requests", type=int, default=None, help="requests per level (default: max(16, 4 x c))"
    )
    parser.add_argument("--baseline-requests", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads on both sides")
    parser.add_argument("--batch-window-ms", type=float, default=10.0, help="server setting")
    parser.add_argument("--workdir", type=Path, help="where to build the model (default: temp)")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from llavakit.model.convert_hf import export_hf

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="serve-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    per_level = {c: args.requests or max(16, 4 * c) for c in args.concurrency}
    samples = write_samples(workdir, max([args.baseline_requests, *per_level.values()]))
    checkpoint = write_checkpoint(workdir)
    hf_dir = workdir / "hf"
    export_hf(checkpoint, hf_dir)
    print(f"model in {workdir}; load average {os.getloadavg()[0]:.1f}", file=sys.stderr)

    print("baseline: transformers generate, one request at a time ...", file=sys.stderr)
    baseline = run_baseline(hf_dir, samples[: args.baseline_requests], args.max_tokens)
    rows = [baseline.row("transformers generate (sequential)", 1, None)]

    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    server = start_server(checkpoint, port, args, workdir / "serve.log")
    matches = 0
    try:
        for concurrency in args.concurrency:
            print(f"llavakit serve, concurrency {concurrency} ...", file=sys.stderr)
            asyncio.run(load_test(base_url, samples[:1], 1, args.max_tokens))  # warm-up
            before = batch_sizes(base_url)
            measured = asyncio.run(
                load_test(base_url, samples[: per_level[concurrency]], concurrency, args.max_tokens)
            )
            after = batch_sizes(base_url)
            batches, requests = after[0] - before[0], after[1] - before[1]
            measured.mean_batch = requests / batches if batches else None
            rows.append(measured.row("llavakit serve", concurrency, baseline))
            if concurrency == args.concurrency[-1]:
                n = min(len(measured.answers), len(baseline.answers))
                matches = sum(a == b for a, b in zip(measured.answers[:n], baseline.answers[:n]))
    finally:
        server.terminate()
        server.wait(timeout=60)

    print(table(rows))
    print(
        f"\ngreedy answers equal to the baseline's: {matches}/{len(baseline.answers)} "
        f"(largest concurrency); load average at the end {os.getloadavg()[0]:.1f}"
    )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
