"""Train the synthetic world's "pretrained LLM": a tiny `LlamaForCausalLM` on the world's text.

Vicuna arrives knowing the language its instructions and answers are written in, and how to
answer questions about a context in its prompt. The world's LM learns both: plain next-token
prediction on documents (captions, descriptions) and, like Vicuna's chat tuning, the replies of
conversations rendered with the chat template (world/stage0/text.py writes them: questions
about an image given in words). Samples are packed one after another into a stream; each step
reads windows that start at a sample's first token. The folder it writes holds the config,
safetensors weights, generation config and tokenizer, like a Hugging Face LLM folder, so
`AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained` both read it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from llavakit.precision import resolve_precision
from llavakit.world.stage0.loop import (
    LoopConfig,
    autocast,
    run_loop,
    save_stage0,
    seeded_and_threaded,
)

MAX_POSITIONS = 2048
"""Context length written in the config (RoPE has no learnt positions; LLaVA-1.5 uses 2048)."""
EVAL_WINDOWS = 32
"""At most this many windows measure the train and held-out loss after training."""


@dataclass(frozen=True)
class LanguageModelSizes:
    """Architecture of the tiny Llama; validated before anything trains."""

    hidden_size: int
    """Width of the residual stream and of the (tied) token embeddings."""
    layers: int
    """Decoder layers."""
    heads: int
    """Attention heads (as many key/value heads: no grouped-query attention at this size)."""

    def __post_init__(self) -> None:
        if self.hidden_size % self.heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by heads ({self.heads})"
            )

    @property
    def mlp_size(self) -> int:
        """SwiGLU width: Llama's 8/3 x hidden, rounded up to a multiple of 32."""
        return math.ceil(8 * self.hidden_size / 3 / 32) * 32


def train_language_model(
    texts: Sequence[str],
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    hidden_size: int = 128,
    layers: int = 4,
    heads: int = 4,
    steps: int = 200,
    seq_len: int = 128,
    batch_size: int = 8,
    lr: float = 3e-3,
    min_lr_fraction: float = 0.1,
    heldout_texts: Sequence[str] | None = None,
    heldout_fraction: float = 0.05,
    seed: int = 0,
    time_budget_s: float | None = None,
    progress: bool = True,
    threads: int | None = 1,
    conversations: Sequence[list[dict]] = (),
    template: str = "vicuna_v1",
    precision: str = "fp32",
    difficulties: Sequence[int] | None = None,
    curriculum_fraction: float = 0.0,
) -> dict:
    """Train a tiny Llama causal LM on `texts` (and `conversations`); save it to `out_dir`.

    Each text becomes `<s> text </s>`, every token trained; each conversation (chat messages)
    is rendered with `template` and only its replies are trained. Samples are packed into one
    token stream and the model learns on windows of `seq_len` tokens, each starting at a
    sample's beginning. Held-out loss is measured on `heldout_texts` when given (e.g. the
    world's eval split), otherwise on a `heldout_fraction` of `texts` set aside by the seed.
    `precision` "bf16" runs the forward pass under bfloat16 autocast (weights stay float32;
    about twice as fast on CPUs with native bf16); "auto" picks it only where this CPU runs
    bf16 natively (llavakit/precision.py). Returns the metrics, also written to
    `out_dir/stage0_metrics.json`.

    `difficulties` (one per conversation, e.g. the objects in its scene; texts count as 0) and
    `curriculum_fraction` order what is learnt: over that first share of training, windows start
    only at samples up to a difficulty ceiling that rises one level at a time through every
    difficulty present, then at any sample. Why: a tiny Llama learning from scratch to answer
    "Is there a green square?" about a scene of several objects (the colour must be bound to the
    shape) stays at the yes/no prior for thousands of steps, while on one-object scenes it
    learns, and then carries the skill to more objects (README, "the stage-0 LLM's curriculum").

    `time_budget_s` stops training after that many seconds (the cosine schedule follows whichever
    of steps or time runs out first) and decays to `min_lr_fraction` of `lr` (1.0: a constant
    rate after warmup, for a checkpoint that will go on training). `threads` sets torch's
    thread count for the run and is restored afterwards (None keeps it). It is 1 by default: at
    these widths a second thread gains at most about 2x on an idle 2-core machine, but costs
    3-5x when another process holds a core.
    """
    from transformers import AutoTokenizer

    sizes = LanguageModelSizes(hidden_size, layers, heads)
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    precision = resolve_precision(precision)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    train_texts, eval_texts = _split_texts(
        _checked(texts, "texts"), heldout_texts, heldout_fraction, seed
    )
    levels = [0] * len(train_texts) + _checked_difficulties(difficulties, len(conversations))
    schedule = Curriculum(sorted(set(levels)), curriculum_fraction)  # checked before tokenizing
    samples = [_document(text, tokenizer) for text in train_texts]
    samples += [_conversation(messages, tokenizer, template) for messages in conversations]
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed)).tolist()
    train_stream = _Stream([samples[i] for i in order], [levels[i] for i in order])
    heldout_stream = _pack(eval_texts, tokenizer) if eval_texts else None
    if len(train_stream) < seq_len:
        raise ValueError(
            f"training text has {len(train_stream)} tokens, fewer than seq_len = {seq_len}; "
            "give more text or a shorter seq_len"
        )

    with seeded_and_threaded(seed, threads):
        model = _build_llama(sizes, tokenizer)
        generator = torch.Generator().manual_seed(seed)

        def compute_loss(step: int, progress: float) -> torch.Tensor:
            ceiling = schedule.ceiling(progress)
            ids, labels = train_stream.windows(batch_size, seq_len, generator, ceiling)  # (B, L)
            with autocast(precision):
                logits = model(input_ids=ids).logits[:, :-1]  # (B, seq_len - 1, V)
            targets = labels[:, 1:]  # position t predicts token t + 1
            total = torch.nn.functional.cross_entropy(
                logits.flatten(0, 1).float(), targets.flatten(), reduction="sum"
            )
            # A window may hold no reply at all (a long prompt): it then adds nothing.
            return total / (targets != -100).sum().clamp(min=1)

        loop = LoopConfig(
            steps=steps,
            peak_lr=lr,
            min_lr_fraction=min_lr_fraction,
            time_budget_s=time_budget_s,
            progress=progress,
            description="stage 0: language model",
        )
        result = run_loop(model, compute_loss, loop)
        train_loss = _stream_loss(model, train_stream.ids, seq_len)
        heldout_loss = (
            _stream_loss(model, heldout_stream, seq_len) if heldout_stream is not None else None
        )

    metrics = result.metrics() | {
        "train_loss": train_loss,
        "heldout_loss": heldout_loss,
        "n_train_texts": len(train_texts),
        "n_train_conversations": len(conversations),
        "n_heldout_texts": len(eval_texts),
        "n_train_tokens": len(train_stream),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    save_stage0(out_dir, metrics, model, tokenizer)
    return metrics


@dataclass(frozen=True)
class Curriculum:
    """Which samples training draws from as it progresses: easy ones first, then all."""

    levels: list[int]
    """The sorted distinct difficulties of the samples."""
    fraction: float
    """Share of training over which the ceiling climbs; 0 draws from every sample throughout."""

    def __post_init__(self) -> None:
        if not 0 <= self.fraction <= 1:
            raise ValueError(f"curriculum_fraction must be in [0, 1], got {self.fraction}")

    def ceiling(self, progress: float) -> int | None:
        """The highest difficulty drawn at `progress`, or None for no limit.

        The levels above the easiest get an equal share of the climb each; the easiest level
        is always in (captions and other texts are difficulty 0)."""
        steps = self.levels[1:]
        if not steps or progress >= self.fraction:
            return None
        return steps[min(len(steps) - 1, int(progress / self.fraction * len(steps)))]


def _checked_difficulties(difficulties: Sequence[int] | None, count: int) -> list[int]:
    if difficulties is None:
        return [0] * count
    levels = list(difficulties)
    if len(levels) != count:
        raise ValueError(f"difficulties: {len(levels)} given for {count} conversations")
    if any(not isinstance(level, int) or level < 0 for level in levels):
        raise ValueError("difficulties: expected non-negative integers")
    return levels


def _build_llama(sizes: LanguageModelSizes, tokenizer):
    """A freshly initialised Llama over the world's tokenizer, embeddings tied to the output."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=sizes.hidden_size,
        intermediate_size=sizes.mlp_size,
        num_hidden_layers=sizes.layers,
        num_attention_heads=sizes.heads,
        num_key_value_heads=sizes.heads,
        max_position_embeddings=MAX_POSITIONS,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def _checked(texts: Sequence[str] | None, name: str) -> list[str]:
    """The texts as a list, refusing anything that is not a non-empty string."""
    if texts is None or isinstance(texts, str):
        raise TypeError(f"{name}: expected a sequence of strings, got {type(texts).__name__}")
    checked = list(texts)
    for index, text in enumerate(checked):
        if not isinstance(text, str) or not text:
            raise ValueError(f"{name}[{index}]: expected a non-empty string, got {text!r:.80}")
    if not checked:
        raise ValueError(f"{name}: no texts given")
    return checked


def _split_texts(
    texts: list[str], heldout_texts: Sequence[str] | None, heldout_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Training texts and held-out texts: the given held-out set, or a seeded random share."""
    if heldout_texts is not None:
        return texts, _checked(heldout_texts, "heldout_texts")
    if not 0 <= heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    count = min(round(len(texts) * heldout_fraction), len(texts) - 1)
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed + 1)).tolist()
    heldout = set(order[:count])
    return (
        [text for index, text in enumerate(texts) if index not in heldout],
        [text for index, text in enumerate(texts) if index in heldout],
    )


def _document(text: str, tokenizer) -> tuple[list[int], list[int]]:
    """`<s> text </s>`, every token trained."""
    ids = tokenizer(text, add_special_tokens=True)["input_ids"] + [tokenizer.eos_token_id]
    return ids, ids


def _conversation(messages: list[dict], tokenizer, template: str) -> tuple[list[int], list[int]]:
    """The chat rendering of a conversation; only the replies (and their end) are trained."""
    from llavakit.conversation import encode

    encoded = encode(tokenizer, template, messages)
    return encoded.input_ids, encoded.labels


class _Stream:
    """Samples packed back to back, with the token index where each sample starts."""

    def __init__(self, samples: list[tuple[list[int], list[int]]], levels: list[int]):
        ids = [token for sample_ids, _ in samples for token in sample_ids]
        labels = [label for _, sample_labels in samples for label in sample_labels]
        self.ids = torch.tensor(ids, dtype=torch.long)  # (n_tokens,)
        self.labels = torch.tensor(labels, dtype=torch.long)  # (n_tokens,), -100 = not trained
        lengths = torch.tensor([len(sample_ids) for sample_ids, _ in samples])
        self.starts = torch.cumsum(lengths, 0) - lengths  # (n_samples,)
        self.levels = torch.tensor(levels)  # (n_samples,) difficulty of each sample

    def __len__(self) -> int:
        return len(self.ids)

    def windows(self, count: int, length: int, generator: torch.Generator, ceiling=None):
        """`count` windows of `length` tokens, each from a random sample's first token (of a
        sample no harder than `ceiling`, when given)."""
        fits = self.starts <= len(self.ids) - length
        if ceiling is not None:
            capped = fits & (self.levels <= ceiling)
            fits = capped if bool(capped.any()) else fits
        usable = self.starts[fits]
        picks = usable[torch.randint(0, len(usable), (count,), generator=generator)].tolist()
        ids = torch.stack([self.ids[s : s + length] for s in picks])  # (count, length)
        labels = torch.stack([self.labels[s : s + length] for s in picks])
        return ids, labels


def _pack(texts: list[str], tokenizer) -> torch.Tensor:
    """`<s> text </s>` for every text, concatenated into one stream of token ids."""
    encoded = tokenizer(texts, add_special_tokens=True)["input_ids"]
    eos = tokenizer.eos_token_id
    return torch.tensor([token for ids in encoded for token in (*ids, eos)], dtype=torch.long)


@torch.no_grad()
def _stream_loss(model, stream: torch.Tensor, seq_len: int) -> float | None:
    """Mean next-token loss over windows spread evenly along `stream`."""
    length = min(seq_len, len(stream))
    if length < 2:
        return None
    count = min(EVAL_WINDOWS, len(stream) // length)
    starts = torch.linspace(0, len(stream) - length, count).long().tolist()
    batch = torch.stack([stream[start : start + length] for start in starts])  # (count, length)
    return float(model(input_ids=batch, labels=batch).loss)
