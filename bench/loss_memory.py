"""Peak memory of the training loss with a large vocabulary: llavakit's chunked cross-entropy
against transformers' own loss.

A LLaVA step on Qwen2 makes float32 logits for every trained token over a 152K vocabulary: that
tensor and its gradient are the largest activations of the step. llavakit projects only trained
positions (`train.trained_logits_only`) and, by default, `train.loss_chunk_tokens` = 4096 of them
at a time, recomputed in backward (llavakit.model.loss).

Model: a Qwen2-shaped causal LM with Qwen2's vocabulary (151,936) and a small body (width 256,
2 layers), random weights; a batch of 4 rows x 1024 tokens, half of them trained (as in a
LLaVA-1.5 conversation, where prompts and image tokens are not). Each configuration runs one
forward + backward in its own process; peak RSS is that process's high-water mark minus its RSS
before the step.

    python bench/loss_memory.py [--rows 4] [--length 1024] [--chunk 1024]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

from child_process import report, run_child

VOCAB = 151_936
CONFIGS = ("transformers", "llavakit trained-only", "llavakit chunked")


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def run_one(name: str, rows: int, length: int, chunk: int) -> dict:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from llavakit.model.loss import chunked_cross_entropy

    torch.manual_seed(0)
    torch.set_num_threads(1)
    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=256,
        intermediate_size=704,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    model = Qwen2ForCausalLM(config)
    input_ids = torch.randint(0, VOCAB, (rows, length))
    labels = input_ids.clone()
    labels[:, : length // 2] = -100  # the prompt half is not trained
    before = rss_mb()
    start = time.perf_counter()
    if name == "transformers":
        loss = model(input_ids=input_ids, labels=labels).loss
    else:
        hidden = model.get_decoder()(input_ids=input_ids).last_hidden_state  # [B, T, D]
        targets = labels[:, 1:]
        trained = targets != -100
        picked = hidden[:, :-1][trained]  # [n_trained, D]
        size = chunk if name == "llavakit chunked" else picked.shape[0]
        total = chunked_cross_entropy(picked, targets[trained], model.lm_head, size)
        loss = total / trained.sum()
    loss.backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"config": name, "loss": float(loss), "peak_mb": peak - before, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--run", help=argparse.SUPPRESS)  # child process: one configuration
    args = parser.parse_args()
    if args.run:
        report(run_one(args.run, args.rows, args.length, args.chunk))
        return
    results = []
    for name in CONFIGS:
        options = ["--rows", str(args.rows), "--length", str(args.length)]
        results.append(run_child(__file__, name, options + ["--chunk", str(args.chunk)]))
        print(f"[{name}] {results[-1]}", file=sys.stderr)
    base = results[0]
    trained = args.rows * (args.length - args.length // 2)
    print(
        f"| {args.rows} x {args.length} tokens, {trained} trained, vocab {VOCAB} "
        "| peak step memory MB | vs transformers | step s | loss |"
    )
    print("|---|---|---|---|---|")
    for r in results:
        label = r["config"] + (f" ({args.chunk})" if r["config"] == "llavakit chunked" else "")
        print(
            f"| {label} | {r['peak_mb']:.0f} | {r['peak_mb'] / base['peak_mb']:.2f}x | "
            f"{r['seconds']:.2f} | {r['loss']:.4f} |"
        )


if __name__ == "__main__":
    main()
