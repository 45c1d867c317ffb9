"""`llavakit world <verb>`: make the synthetic world, its benchmark, and a contact sheet.

llavakit world generate --out DIR --scenes N --text-images M --seed S
llavakit world benchmark --world DIR --out questions.jsonl [--split eval]
llavakit world preview --world DIR --out sheet.png [--split train --n 24]
llavakit world vqa --world DIR --out vqa.json [--split train --questions 12]
llavakit world stand-ins --out DIR [--minutes 40 --work DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "world", help="the embedded synthetic world: generate images, benchmark, preview"
    )
    verbs = parser.add_subparsers(dest="world_verb", metavar="<verb>")
    parser.set_defaults(func=lambda args: parser.print_help() or 1)

    generate = verbs.add_parser(
        "generate",
        help="draw scenes and text-rich images with COCO-layout train/eval annotations",
        description="Writes DIR/images/, DIR/train/ and DIR/eval/ (instances.json, "
        "captions.json, texts.json) and DIR/world.json. Deterministic from --seed; an "
        "identical finished world in DIR is reused unless --fresh.",
    )
    generate.add_argument("--out", type=Path, required=True, help="world folder to write")
    generate.add_argument("--scenes", type=int, default=1000, help="scene images (both splits)")
    generate.add_argument(
        "--text-images", type=int, default=300, help="text-rich images (both splits)"
    )
    generate.add_argument("--seed", type=int, default=0, help="random seed")
    generate.add_argument(
        "--eval-fraction", type=float, default=0.1, help="share held out for eval"
    )
    generate.add_argument("--scene-size", type=int, default=96, help="scene side in pixels")
    generate.add_argument("--text-size", type=int, default=192, help="text image side in pixels")
    generate.add_argument(
        "--small-text-fraction",
        type=float,
        default=0.0,
        help="share of text images with deliberately small text",
    )
    generate.add_argument("--fresh", action="store_true", help="redraw even if already made")
    generate.add_argument(
        "--workers",
        type=int,
        default=None,
        help="drawing processes (default: one per core, up to 8); the world is the same for any",
    )
    generate.add_argument("--quiet", action="store_true", help="no progress bar")
    generate.set_defaults(func=_generate)

    benchmark = verbs.add_parser(
        "benchmark",
        help="write the world benchmark's question JSONL for a split",
        description="One line per question: question_id, image (relative to DIR/images), "
        "text, category, answer.",
    )
    benchmark.add_argument("--world", type=Path, required=True, help="a generated world folder")
    benchmark.add_argument("--out", type=Path, required=True, help="question JSONL to write")
    benchmark.add_argument("--split", default="eval", choices=("train", "eval"))
    benchmark.add_argument("--seed", type=int, default=0, help="seed for question choices")
    benchmark.set_defaults(func=_benchmark)

    preview = verbs.add_parser("preview", help="save a contact sheet of images with their boxes")
    preview.add_argument("--world", type=Path, required=True, help="a generated world folder")
    preview.add_argument("--out", type=Path, required=True, help="PNG to write")
    preview.add_argument("--split", default="train", choices=("train", "eval"))
    preview.add_argument("--n", type=int, default=24, help="number of images")
    preview.set_defaults(func=_preview)

    vqa = verbs.add_parser(
        "vqa",
        help="write short-answer VQA records (LLaVA-1.5 style) from a split's annotations",
        description="One multi-turn LLaVA JSON record per scene: perception questions, each "
        'followed by "Answer the question using a single word or phrase.", answered from the '
        "annotations (the world's stand-in for VQAv2/GQA in LLaVA-1.5's mix).",
    )
    vqa.add_argument("--world", type=Path, required=True, help="a generated world folder")
    vqa.add_argument("--out", type=Path, required=True, help="LLaVA JSON file to write")
    vqa.add_argument("--split", default="train", choices=("train", "eval"))
    vqa.add_argument("--questions", type=int, default=12, help="questions per image (at most)")
    vqa.add_argument("--seed", type=int, default=0, help="seed for question choices")
    vqa.set_defaults(func=_vqa)

    stand_ins = verbs.add_parser(
        "stand-ins",
        help="pretrain the world's CLIP and LLM, the stand-ins the demo starts from",
        description="Draws the pretraining world (its own seed), writes its teacher and OCR "
        "data, and trains the tokenizer, the CLIP and the LLM for --minutes each, side by side "
        "(demo/stand_ins.py). Writes DIR/{tokenizer,llm,clip}/ and DIR/manifest.json; "
        "`llavakit demo --stage0 DIR` uses them. The shipped ones are rebuilt with "
        "`make stand-ins`.",
    )
    stand_ins.add_argument("--out", type=Path, required=True, help="stand-ins folder to write")
    stand_ins.add_argument(
        "--minutes", type=float, default=40.0, help="training time of each model"
    )
    stand_ins.add_argument(
        "--work", type=Path, help="keep the pretraining world, data and losses here"
    )
    stand_ins.add_argument(
        "--smoke", action="store_true", help="the demo's tiny test sizes (seconds, for tests)"
    )
    stand_ins.set_defaults(func=_stand_ins)


def _stand_ins(args: argparse.Namespace) -> int:
    from llavakit.demo.sizes import DEFAULT, SMOKE
    from llavakit.demo.stand_ins import build_stand_ins

    if args.minutes <= 0:
        print(
            f"llavakit world stand-ins: --minutes must be positive, got {args.minutes}",
            file=sys.stderr,
        )
        return 2
    if args.smoke:  # the smoke sizes' own step counts, no time budget
        manifest = build_stand_ins(args.out, SMOKE, None, args.work)
    else:
        manifest = build_stand_ins(args.out, DEFAULT, args.minutes, args.work)
    llm, clip = manifest["metrics"]["llm"], manifest["metrics"]["clip"]
    print(
        f"wrote {args.out}: LLM {llm['steps']} steps (held-out benchmark in words "
        f"{llm.get('benchmark_in_words')}), CLIP {clip['steps']} steps "
        f"(region probes {clip.get('region_accuracy')})"
    )
    return 0


def _generate(args: argparse.Namespace) -> int:
    from llavakit.world.generate import default_workers, generate_world

    if args.workers is not None and args.workers < 1:
        print(
            f"llavakit world generate: --workers must be >= 1, got {args.workers}", file=sys.stderr
        )
        return 2
    summary = generate_world(
        args.out,
        n_scenes=args.scenes,
        n_text_images=args.text_images,
        seed=args.seed,
        eval_fraction=args.eval_fraction,
        scene_size=args.scene_size,
        text_size=args.text_size,
        small_text_fraction=args.small_text_fraction,
        reuse=not args.fresh,
        progress=not args.quiet,
        workers=args.workers or default_workers(),
    )
    state = "reused" if summary.reused else "wrote"
    counts = ", ".join(
        f"{split}: {c['scene']} scenes + {c['text']} text images"
        for split, c in summary.counts.items()
    )
    print(f"{state} {summary.out_dir} ({counts})")
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    from collections import Counter

    from llavakit.world.benchmark import write_benchmark

    questions = write_benchmark(args.world, args.out, split=args.split, seed=args.seed)
    by_category = Counter(q.category for q in questions)
    listed = ", ".join(f"{name} {n}" for name, n in sorted(by_category.items()))
    print(f"wrote {len(questions)} questions to {args.out} ({listed})")
    return 0


def _preview(args: argparse.Namespace) -> int:
    from llavakit.world.preview import contact_sheet

    print(f"wrote {contact_sheet(args.world, args.out, split=args.split, n=args.n)}")
    return 0


def _vqa(args: argparse.Namespace) -> int:
    from llavakit.world.annotations import load_split
    from llavakit.world.vqa import write_vqa

    count = write_vqa(load_split(args.world, args.split), args.out, args.seed, args.questions)
    print(f"wrote {count} records to {args.out}")
    return 0
