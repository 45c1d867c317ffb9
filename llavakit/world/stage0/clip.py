"""Train the synthetic world's "pretrained CLIP": a tiny `CLIPModel` learnt contrastively.

LLaVA keeps only CLIP's vision tower, but the tower is only useful because contrastive training
on captions taught it what captions talk about (colours, shapes, counts, positions, words). The
saved folder has the same files as openai/clip-vit-large-patch14-336 (config, safetensors
weights, `preprocessor_config.json`, tokenizer), so stage 1 loads it with
`CLIPVisionModel.from_pretrained` / `CLIPImageProcessor.from_pretrained` like the real one.

Several images often share one caption ("a red circle"), and one image may come with several
captions; in-batch contrastive targets therefore treat every pair with the same image or the
same caption text as a positive instead of pretending they are negatives.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from llavakit.image_config import CLIP_MEAN, CLIP_STD
from llavakit.precision import resolve_precision
from llavakit.world.stage0.clip_data import (
    MAX_CAPTION_TOKENS,
    EncodedPairs,
    encode_pairs,
    split_by_image,
    validate_pairs,
)
from llavakit.world.stage0.loop import (
    LoopConfig,
    autocast,
    run_loop,
    save_stage0,
    seeded_and_threaded,
)

INITIAL_LOGIT_SCALE = math.log(1 / 0.07)
MAX_LOGIT_SCALE = math.log(100.0)


@dataclass(frozen=True)
class ClipSizes:
    """Architecture of the tiny CLIP; validated before anything trains."""

    image_size: int
    """Side of the square input image in pixels."""
    patch_size: int
    """Side of a ViT patch; the tower sees (image_size / patch_size)^2 patches plus CLS."""
    hidden_size: int
    """Width of both towers and of the shared embedding space."""
    vision_layers: int
    """Transformer layers of the vision tower (LLaVA reads the second-to-last)."""
    text_layers: int
    """Transformer layers of the text tower; captions are short, so it can be shallower."""
    heads: int
    """Attention heads in both towers."""

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})"
            )
        if self.hidden_size % self.heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by heads ({self.heads})"
            )


def train_clip(
    pairs: Sequence[tuple],
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    image_size: int = 64,
    patch_size: int = 8,
    hidden_size: int = 128,
    vision_layers: int = 4,
    text_layers: int = 2,
    heads: int = 4,
    steps: int = 200,
    batch_size: int = 32,
    lr: float = 1e-3,
    heldout_fraction: float = 0.1,
    seed: int = 0,
    time_budget_s: float | None = None,
    progress: bool = True,
    threads: int | None = 1,
    patch_labels: Mapping[str, torch.Tensor] | None = None,
    label_classes: Mapping[str, int] | None = None,
    select_layer: int = -2,
    precision: str = "fp32",
) -> dict:
    """Train a tiny CLIP on (image, caption) pairs and save it as a standard HF CLIP folder.

    With `patch_labels` (image path -> [n_patches, len(label_classes)] class ids, -100 to
    ignore; `label_classes` names each column and its number of classes), linear probes on the patch features of hidden layer `select_layer` (the one LLaVA
    reads) learn to name what each patch shows, beside the contrastive loss: a region-level
    objective that puts object and text identity into the patch features. The probes are not
    saved. `precision` "bf16" runs the forward pass under bfloat16 autocast ("auto": where
    this CPU runs bf16 natively, llavakit/precision.py).

    `pairs` holds PIL images or image paths with their captions; an image may appear in several
    pairs. A `heldout_fraction` of the distinct images (never seen in training) measures
    zero-shot retrieval: for each held-out image, is the nearest caption among a batch of
    `batch_size` held-out captions a correct one? Returns the metrics, also written to
    `out_dir/stage0_metrics.json`.

    `time_budget_s` stops training after that many seconds (the cosine schedule follows whichever
    of steps or time runs out first). `threads` sets torch's thread count for the run and is
    restored afterwards (None keeps it). It is 1 by default: at these widths a second thread
    gains at most about 2x on an idle 2-core machine, but costs 3-5x when another process
    holds a core.
    """
    from transformers import AutoTokenizer

    sizes = ClipSizes(image_size, patch_size, hidden_size, vision_layers, text_layers, heads)
    precision = resolve_precision(precision)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    processor = _image_processor(sizes.image_size)
    image_of_pair, images, captions, sources = validate_pairs(pairs)
    train_rows, heldout_rows = split_by_image(image_of_pair, len(images), heldout_fraction, seed)
    labels = None
    if patch_labels is not None:
        labels = torch.stack([patch_labels[str(source)] for source in sources])  # (n, N, H)

    with seeded_and_threaded(seed, threads):
        data = encode_pairs(images, image_of_pair, captions, processor, tokenizer)
        model = _build_clip(sizes, tokenizer)
        probes = None
        if labels is not None:
            probes = _RegionProbes(sizes.hidden_size, list((label_classes or {}).values()))
        sampler = _EpochSampler(train_rows, batch_size, torch.Generator().manual_seed(seed))

        def compute_loss(step: int, progress: float) -> torch.Tensor:
            rows = sampler.next_batch()
            ids, mask, pixel_values, positives = data.batch(rows)
            with autocast(precision):
                out = model(
                    input_ids=ids,
                    attention_mask=mask,
                    pixel_values=pixel_values,
                    output_hidden_states=probes is not None,
                )
                loss = _multi_positive_infonce(out.logits_per_image.float(), positives)
                if probes is not None:
                    patches = out.vision_model_output.hidden_states[select_layer][:, 1:]  # (B,N,C)
                    loss = loss + probes.loss(patches, labels[data.image_index[rows]])
            return loss

        def clamp_temperature() -> None:
            with torch.no_grad():
                model.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)

        loop = LoopConfig(
            steps=steps,
            peak_lr=lr,
            time_budget_s=time_budget_s,
            progress=progress,
            description="stage 0: CLIP",
        )
        result = run_loop(model, compute_loss, loop, after_step=clamp_temperature, extra=probes)
        retrieval, chance = _heldout_retrieval(model, data, heldout_rows, batch_size)
        region = None
        if probes is not None:
            accuracy = _heldout_region_accuracy(
                model, probes, data, labels, heldout_rows, select_layer
            )
            region = (
                None
                if accuracy is None
                else {name: accuracy[k] for k, name in enumerate(label_classes) if k in accuracy}
            )

    metrics = result.metrics() | {
        "retrieval_top1": retrieval,
        "retrieval_chance": chance,
        "region_accuracy": region,
        "logit_scale": model.logit_scale.detach().exp().item(),
        "n_train_pairs": len(train_rows),
        "n_heldout_pairs": len(heldout_rows),
        "n_images": len(images),
        "parameters": sum(p.numel() for p in model.parameters()),
        "vision_tokens": (sizes.image_size // sizes.patch_size) ** 2,
    }
    save_stage0(out_dir, metrics, model, processor, tokenizer)
    return metrics


def _image_processor(image_size: int):
    """CLIP's preprocessing (bicubic shortest-edge resize, centre crop, CLIP mean/std) at our size."""
    # The Pillow implementation needs no torchvision; both implementations save the same JSON,
    # which `CLIPImageProcessor.from_pretrained` reads back.
    try:
        from transformers import CLIPImageProcessorPil as processor_class
    except ImportError:  # transformers releases with a single CLIPImageProcessor
        from transformers import CLIPImageProcessor as processor_class
    return processor_class(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
        do_convert_rgb=True,
    )


def _build_clip(sizes: ClipSizes, tokenizer):
    """A freshly initialised `CLIPModel` whose text tower speaks the world's tokenizer."""
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

    vision = CLIPVisionConfig(
        hidden_size=sizes.hidden_size,
        intermediate_size=4 * sizes.hidden_size,
        num_hidden_layers=sizes.vision_layers,
        num_attention_heads=sizes.heads,
        image_size=sizes.image_size,
        patch_size=sizes.patch_size,
        projection_dim=sizes.hidden_size,
    )
    text = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=sizes.hidden_size,
        intermediate_size=4 * sizes.hidden_size,
        num_hidden_layers=sizes.text_layers,
        num_attention_heads=sizes.heads,
        max_position_embeddings=MAX_CAPTION_TOKENS,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        projection_dim=sizes.hidden_size,
    )
    config = CLIPConfig(
        text_config=text.to_dict(),
        vision_config=vision.to_dict(),
        projection_dim=sizes.hidden_size,
        logit_scale_init_value=INITIAL_LOGIT_SCALE,
    )
    return CLIPModel(config)


def _multi_positive_infonce(
    logits_per_image: torch.Tensor, positives: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE whose target spreads evenly over every positive of a row.

    logits_per_image: (B, B) scaled image-text similarities; positives: (B, B) bool, symmetric.
    """
    targets = positives.float() / positives.sum(dim=1, keepdim=True)  # (B, B)
    image_to_text = F.cross_entropy(logits_per_image, targets)
    text_to_image = F.cross_entropy(logits_per_image.t(), targets)
    return (image_to_text + text_to_image) / 2


class _RegionProbes(torch.nn.Module):
    """One linear classifier per label kind over every patch feature (trained, never saved)."""

    def __init__(self, width: int, classes: Sequence[int]):
        super().__init__()
        self.heads = torch.nn.ModuleList(torch.nn.Linear(width, n) for n in classes)

    def loss(self, patches: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """patches: (B, N, C) features; labels: (B, N, heads) class ids, -100 ignored.

        The heads' losses are summed, not averaged: each head is a separate objective, and a
        mean divided the object heads' share of the gradient by seven (shape probe 0.23 vs 0.29
        at the same 100 s)."""
        losses = [
            F.cross_entropy(head(patches).flatten(0, 1).float(), labels[..., k].flatten())
            for k, head in enumerate(self.heads)
            if bool((labels[..., k] != -100).any())
        ]
        return torch.stack(losses).sum() if losses else patches.sum() * 0.0


class _EpochSampler:
    """Batches drawn without replacement; reshuffles when the training pairs run out."""

    def __init__(self, rows: list[int], batch_size: int, generator: torch.Generator):
        if batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 for contrastive training, got {batch_size}")
        self.rows = torch.tensor(rows)
        self.batch_size = min(batch_size, len(rows))
        self.generator = generator
        self.order = torch.empty(0, dtype=torch.long)

    def next_batch(self) -> torch.Tensor:
        if len(self.order) < self.batch_size:
            self.order = self.rows[torch.randperm(len(self.rows), generator=self.generator)]
        batch, self.order = self.order[: self.batch_size], self.order[self.batch_size :]
        return batch


@torch.no_grad()
def _heldout_retrieval(
    model, data: EncodedPairs, heldout_rows: list[int], batch_size: int
) -> tuple[float | None, float | None]:
    """Image -> caption top-1 accuracy among batches of held-out pairs, and its chance level.

    Chance is what picking a caption at random would score given the duplicate captions in
    each batch, so the two numbers are directly comparable.
    """
    if len(heldout_rows) < 2:
        return None, None
    rows_all = torch.tensor(heldout_rows)
    hits, chance, count = 0.0, 0.0, 0
    for start in range(0, len(rows_all), batch_size):
        rows = rows_all[start : start + batch_size]
        if len(rows) < 2:
            break
        ids, mask, pixel_values, positives = data.batch(rows)
        logits = model(
            input_ids=ids, attention_mask=mask, pixel_values=pixel_values
        ).logits_per_image
        best = logits.argmax(dim=1)  # (B,)
        hits += positives[torch.arange(len(rows)), best].float().sum().item()
        chance += (positives.float().sum(dim=1) / len(rows)).sum().item()
        count += len(rows)
    return hits / count, chance / count


@torch.no_grad()
def _heldout_region_accuracy(
    model, probes: _RegionProbes, data: EncodedPairs, labels, heldout_rows, select_layer: int
) -> dict[int, float] | None:
    """Per probe (by column): the share of held-out images' patches showing something (an
    object, a word) that it names right; the many empty patches would flatter the score."""
    images = sorted({int(i) for i in data.image_index[heldout_rows]}) if heldout_rows else []
    if not images:
        return None
    index = torch.tensor(images)
    hits = torch.zeros(len(probes.heads))
    counts = torch.zeros(len(probes.heads))
    for start in range(0, len(index), 64):
        chunk = index[start : start + 64]
        hidden = model.vision_model(pixel_values=data.pixels[chunk], output_hidden_states=True)
        patches = hidden.hidden_states[select_layer][:, 1:]  # (b, N, C)
        for k, head in enumerate(probes.heads):
            wanted = labels[chunk][..., k]  # (b, N)
            known = wanted > 0  # patches that show something (class 0 is "nothing here")
            hits[k] += (head(patches).argmax(-1)[known] == wanted[known]).sum()
            counts[k] += known.sum()
    return {k: round(float(h / c), 4) for k, (h, c) in enumerate(zip(hits, counts)) if c > 0}
