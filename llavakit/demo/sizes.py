"""How big each demo step is. One preset fills the 10-minute budget on a 2-core laptop; the
smoke preset runs the same pipeline in well under a minute for tests."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class DemoSizes:
    """Sizes of every step; part of each step's cache key."""

    n_scenes: int = 5000
    """Scenes drawn (90% train). Many distinct images seen about once each did better held out
    than 1,400 seen for four epochs (colour 0.70 vs 0.60, counting 0.70 vs 0.55; 40 questions)."""
    n_text_images: int = 1300
    small_text_fraction: float = 0.2
    """Share of text images with deliberately small text (`reading_small`: illegible to the base
    tower, the case LLaVAR's high-resolution branch is for)."""
    ocr_images: int = 1170
    """Text-rich training images read with PP-OCRv4 (the slowest data step on a CPU)."""
    llavar_conversations: int = 400
    """Of those, the images the teacher writes OCR-grounded conversations for (each needs a
    caption from the stage-1 model first)."""
    seed: int = 0
    image_size: int = 96
    """Resolution of the world's CLIP tower (its patches become image tokens)."""
    patch_size: int = 12
    clip_width: int = 64
    clip_layers: int = 4
    clip_steps: int = 5000
    clip_lr: float = 3e-3
    """Width 64 at 3e-3 beat width 128 at 1e-3 in the same 100 s (AVX2 EPYC, fp32): 492 steps
    instead of 202, held-out retrieval 0.81 vs 0.68, row/column probes 0.98 vs 0.43 (README)."""
    lm_width: int = 64
    """Width 64 against 128 in the same 100 s (AVX2 EPYC, fp32, seed 0, windows 8 x 512): 147
    steps instead of 81, reply loss 0.90 vs 1.22, text-only benchmark position 0.44 vs 0.00,
    colour and counting level. 100 s on one core is far less compute than a width-128 model
    needs (README, stage-0 levers)."""
    lm_layers: int = 4
    lm_heads: int = 4
    lm_steps: int = 5000
    lm_seq_len: int = 128
    lm_batch_size: int = 32
    """Short windows, many of them: a conversation's first answers are where the decisions are
    (seq 128 x 32 vs 256 x 16 vs 512 x 8 at width 64: loss 0.70 / 0.76 / 0.90)."""
    lm_lr: float = 3e-4
    """3e-3 and 1e-3 leave a width-64 Llama at the yes/no prior on "is there a <colour> <shape>"
    for thousands of steps even with one object per scene; 3e-4 and 1e-4 learn it (README,
    "the stage-0 LLM's curriculum")."""
    lm_lr_floor: float = 1.0
    """The LM's rate stays at its peak after warmup (the checkpoint goes on training in stages 1
    and 2): at 100 s, loss 0.70 vs 0.81 with a cosine to 0.1 at width 64, 1.51 vs 1.94 at 128."""
    lm_captions_per_image: int | None = 1
    """Captions the LM reads per training image beside the conversations (None: all). All of
    them crowd the questions out: text-only benchmark position 0.13 vs 0.53, colour 0.20 vs
    0.22 at the same 100 s."""
    lm_contextual_qa: bool = True
    """The LLM also learns to answer the training conversations with each image written in
    words (world/stage0/text.py), as Vicuna arrives able to answer about a context."""
    lm_curriculum: float = 0.9
    """The LLM's curriculum (world/stage0/lm.py, Curriculum): over the first 45% of its
    training, conversations about one-object scenes only (with texts and text-rich images),
    then everything (the climb's two levels share this 0.9); 0 mixes all from the start."""
    clip_region_objective: bool = True
    """The CLIP's patch features also learn to name the shape, colour, size, word and letter
    under each patch (world/stage0/region_labels.py), beside the contrastive loss."""
    stage0: str = "shipped"
    """Where the pretrained CLIP and LLM come from: "shipped" (llavakit's stand-ins, pretrained
    once for far longer than a demo can afford: demo/stand_ins.py), "train" (train them inside
    the run with the `clip_*` and `lm_*` sizes and budgets below), or a stand-ins folder built
    by `llavakit world stand-ins`."""
    precision: str = "auto"
    """bf16 autocast for stage 0-2 training where the CPU runs bf16 natively (about 2x a float32
    step with AVX-512 BF16), float32 where it does not (on an AVX2-only EPYC emulated bf16 gave
    the stage-0 LM 11 steps in 100 s against 76 in float32). Resolved once per run
    (llavakit/precision.py); the report records the choice."""
    vocab_size: int = 2000
    vqa_questions: int = 10
    """Short-answer questions per scene in the VQA records (LLaVA-1.5 style, world/vqa.py)."""
    stage2_vqa: bool = False
    """Mix the short-answer VQA records into stage 2, as LLaVA-1.5 does. Off: at the same budget
    (seed 0, 120 questions per category) they lowered colour from 0.46 to 0.27 and counting from
    0.54 to 0.48 while existence and position stayed at chance either way (README, ablations);
    the stage-0 LM still reads them as text."""
    stage1_epochs: float = 1.0
    stage1_lr: float = 2e-3
    stage2_epochs: float = 1.0
    stage2_lr: float = 3e-3
    tune_vision_tower: bool = True
    """Stage 2 also trains the world's CLIP tower (at `vision_lr`). The papers keep CLIP frozen;
    the world's CLIP is a one-minute toy, and letting it adapt buys most of the grounding."""
    vision_lr: float = 2e-4
    batch_size: int = 32
    max_length: int = 384
    eval_per_category: int = 120
    """Benchmark questions per category (0 = all)."""
    curve_every_s: float | None = 60
    """Score the held-out benchmark this often during stage 2 (accuracy against time)."""
    curve_per_category: int = 20
    """Questions per category for each point of that curve."""
    clip_budget_s: float | None = 100
    lm_budget_s: float | None = 100
    """With `stage0="train"`: the CLIP and the LLM train at the same time, one process (and
    core) each. The stand-ins build (`llavakit world stand-ins`) replaces both with its
    --minutes."""
    stage1_budget_s: float | None = 40
    stage2_budget_s: float | None = 240
    """Wall-clock caps per training step, so a slow machine still finishes near the budget."""

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT = DemoSizes()

SMOKE = replace(
    DEFAULT,
    n_scenes=80,
    n_text_images=24,
    ocr_images=6,
    image_size=32,
    patch_size=8,
    clip_width=32,
    clip_layers=2,
    clip_steps=20,
    lm_width=32,
    lm_layers=2,
    lm_heads=2,
    lm_steps=20,
    lm_seq_len=128,
    lm_batch_size=4,
    vocab_size=600,
    stage1_epochs=1.0,
    stage2_epochs=1.0,
    batch_size=16,
    max_length=256,
    eval_per_category=4,
    curve_every_s=1.0,
    curve_per_category=2,
    clip_budget_s=None,
    lm_budget_s=None,
    stage1_budget_s=None,
    stage2_budget_s=None,
    stage0="train",
)


def for_budget(minutes: float) -> DemoSizes:
    """Scale the training work and its wall-clock caps to a budget (defaults fit 10 minutes)."""
    scale = max(0.2, min(6.0, minutes / 10.0))

    def cap(seconds: float | None) -> float | None:
        return None if seconds is None else seconds * scale

    return replace(
        DEFAULT,
        clip_steps=round(DEFAULT.clip_steps * scale),
        lm_steps=round(DEFAULT.lm_steps * scale),
        stage1_epochs=DEFAULT.stage1_epochs * scale,
        stage2_epochs=DEFAULT.stage2_epochs * scale,
        clip_budget_s=cap(DEFAULT.clip_budget_s),
        lm_budget_s=cap(DEFAULT.lm_budget_s),
        stage1_budget_s=cap(DEFAULT.stage1_budget_s),
        stage2_budget_s=cap(DEFAULT.stage2_budget_s),
    )
