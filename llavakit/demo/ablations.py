"""The demo's ablations: stages 1 and 2 again with one thing changed, at the same budget.

- `llavar`: without LLaVAR's text-rich data (the noisy OCR records in stage 1, the OCR-grounded
  conversations and noisy records in stage 2): the paper's reading gap.
- `highres`: with LLaVAR's high-resolution branch (a 4 x 4 grid of crops, read by a copy of the
  tower through cross-attention in every decoder layer): the gain on text too small for the base
  tower (`reading_small`).
"""

from __future__ import annotations

from pathlib import Path

from llavakit.demo.sizes import DemoSizes

ABLATIONS = ("llavar", "highres")


def run_ablation(name: str, out: Path, sizes: DemoSizes, steps, stage0: dict) -> dict:
    """Train and score the ablation `name`; returns `{"accuracy_<variant>": {category: acc}}`."""
    from llavakit.demo.pipeline import evaluate, stage_sources, train_stage

    if name not in ABLATIONS:
        raise ValueError(f"unknown ablation {name!r}; known: {', '.join(ABLATIONS)}")
    text_rich, highres = (False, False) if name == "llavar" else (True, True)
    variant = "without_llavar" if name == "llavar" else "with_highres"
    stage1_sources, stage2_sources = stage_sources(sizes, text_rich)
    s = sizes.to_dict()
    stage1 = steps.run(
        f"ablation_{name}_stage1",
        {"stage0": stage0["key"], "sizes": s},
        lambda: train_stage(
            out, sizes, "align", f"ablation_{name}_stage1", stage1_sources, highres=highres
        ),
    )
    stage2 = steps.run(
        f"ablation_{name}_stage2",
        {"stage1": stage1["key"], "sizes": s},
        lambda: train_stage(
            out,
            sizes,
            "instruct",
            f"ablation_{name}_model",
            stage2_sources,
            stage1["checkpoint"],
            highres=highres,
            curve=False,
        ),
    )
    scores = steps.run(
        f"ablation_{name}_eval",
        {"stage2": stage2["key"], "sizes": s},
        lambda: evaluate(out, sizes, stage2["checkpoint"], variant),
    )
    return {f"accuracy_{variant}": scores["accuracy"], f"interval_{variant}": scores["interval"]}
