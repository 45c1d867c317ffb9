"""`llavakit datagen <kind>`: generate training data (LLaVA teacher pipeline, stage-1 pairs)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
from pathlib import Path

from llavakit.cli import CommandError


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


def add_teacher_arguments(parser: argparse.ArgumentParser) -> None:
    """The teacher options of every teacher-driven verb (LLaVA data, LLaVAR conversations)."""
    teacher = parser.add_argument_group("teacher")
    teacher.add_argument(
        "--teacher",
        choices=("openai", "symbolic"),
        default="openai",
        help="an OpenAI-compatible LLM (default) or the synthetic world's symbolic teacher",
    )
    teacher.add_argument(
        "--base-url",
        default=os.environ.get("OPENAI_BASE_URL"),
        help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (default: $OPENAI_BASE_URL)",
    )
    teacher.add_argument(
        "--model",
        default=os.environ.get("OPENAI_MODEL"),
        help="teacher model name (default: $OPENAI_MODEL); the API key is read from $OPENAI_API_KEY",
    )
    teacher.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    teacher.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    teacher.add_argument("--max-tries", type=int, default=5, help="tries on 429/5xx/timeouts")
    teacher.add_argument("--temperature", type=float, default=1.0)
    teacher.add_argument(
        "--price-input", type=float, default=0.0, help="price per 1M prompt tokens"
    )
    teacher.add_argument(
        "--price-output", type=float, default=0.0, help="price per 1M completion tokens"
    )
    teacher.add_argument("--max-cost", type=float, help="stop sending once this cost is reached")
    teacher.add_argument("--max-requests", type=int, help="stop after this many HTTP requests")
    teacher.add_argument(
        "--cache", type=Path, help="SQLite answer cache (default: <out stem>.cache.sqlite)"
    )


def teacher_config(args: argparse.Namespace):
    """TeacherConfig from the teacher options; None for the symbolic teacher."""
    if args.teacher == "symbolic":
        return None
    from llavakit.datagen.teacher import TeacherConfig

    if not args.model:
        raise CommandError("--model is required with the LLM teacher (or set OPENAI_MODEL)")
    return TeacherConfig(
        model=args.model,
        base_url=args.base_url,
        concurrency=args.concurrency,
        timeout_s=args.timeout,
        max_tries=args.max_tries,
        price_input_per_1m=args.price_input,
        price_output_per_1m=args.price_output,
        max_cost=args.max_cost,
        max_requests=args.max_requests,
        cache_path=args.cache,
    )


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
    add_teacher_arguments(parser)
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
    if importlib.util.find_spec("llavakit.cli.llavar") is not None:
        importlib.import_module("llavakit.cli.llavar").register(kinds)
