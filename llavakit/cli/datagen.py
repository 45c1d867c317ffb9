"""`llavakit datagen <kind>`: generate training data (LLaVA teacher pipeline, stage-1 pairs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from llavakit.cli import CommandError, llavar
from llavakit.cli.teacher_options import add_teacher_arguments, teacher_config


def _types(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _run_llava(args: argparse.Namespace) -> int:
    from llavakit.datagen.llava import LlavaDatagenOptions, run_llava_datagen

    options = LlavaDatagenOptions(
        captions=args.captions,
        out=args.out,
        images=args.images,
        annotations=args.annotations,
        types=args.types,
        n=args.n,
        prompts_dir=args.prompts,
        params={"temperature": args.temperature},
        seed=args.seed,
        missing_images=args.missing_images,
        progress=not args.no_progress,
    )
    config = teacher_config(args)
    if config is None:
        print(run_llava_datagen(options, None))
        return 0
    from llavakit.datagen.teacher import TeacherError

    try:
        print(run_llava_datagen(options, config))
    except TeacherError as error:
        raise CommandError(str(error)) from error
    return 0


def _run_pretrain(args: argparse.Namespace) -> int:
    from llavakit.datagen.pretrain import PretrainOptions, run_pretrain_datagen

    options = PretrainOptions(
        captions=args.captions,
        out=args.out,
        images=args.images,
        plain=args.plain,
        seed=args.seed,
        prompts_dir=args.prompts,
    )
    print(run_pretrain_datagen(options))
    return 0


def _add_llava(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "llava",
        help="LLaVA instruction data from COCO captions + boxes through a teacher LLM",
        description="Turn COCO captions and boxes into LLaVA conversations, detailed descriptions "
        "and complex-reasoning Q&A with a text-only teacher. Rerun the same command to resume.",
    )
    parser.add_argument("--annotations", type=Path, help="COCO instances JSON (boxes)")
    parser.add_argument("--captions", type=Path, required=True, help="COCO captions JSON")
    parser.add_argument("--images", type=Path, required=True, help="image folder")
    parser.add_argument("--out", type=Path, required=True, help="output .json or .jsonl")
    parser.add_argument(
        "--types",
        type=_types,
        default=("conversation", "detail", "complex"),
        help="comma-separated: conversation,detail,complex (default: all three)",
    )
    parser.add_argument("--n", type=int, help="use only the first N images")
    parser.add_argument(
        "--prompts",
        type=Path,
        help="folder replacing the built-in prompts: llavakit's layout or the official LLaVA "
        "playground/data/prompts folder as it is",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the question draws")
    parser.add_argument(
        "--missing-images",
        choices=("skip", "error"),
        default="skip",
        help="what to do with annotated images whose file is missing (default: skip and count)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_teacher_arguments(parser, generating=True)
    parser.set_defaults(func=_run_llava)


def _add_pretrain(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pretrain",
        help="stage-1 records from image-caption pairs",
        description="Image-caption pairs (COCO captions JSON, or JSONL/JSON/TSV with image and "
        "caption columns) to single-turn 'describe briefly' records for feature alignment.",
    )
    parser.add_argument("--captions", type=Path, required=True, help="captions file")
    parser.add_argument("--images", type=Path, required=True, help="image folder")
    parser.add_argument("--out", type=Path, required=True, help="output .json or .jsonl")
    parser.add_argument("--plain", action="store_true", help="LLaVA-1.5 style: human turn <image>")
    parser.add_argument("--seed", type=int, default=0, help="seed of the question draws")
    parser.add_argument("--prompts", type=Path, help="folder with a brief_questions.txt")
    parser.set_defaults(func=_run_pretrain)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("datagen", help="generate training data")
    kinds = parser.add_subparsers(dest="datagen_kind", metavar="<kind>")
    parser.set_defaults(func=lambda args: parser.print_help() or 1)
    _add_llava(kinds)
    _add_pretrain(kinds)
    llavar.register(kinds)
