"""The teacher options of every verb that talks to a teacher LLM, and the config they make.

`datagen llava`, `datagen llavar conversations` and the judged `eval score` tasks (LLaVA-Bench,
the ScienceQA ensemble) all add `add_teacher_arguments` and build their client's settings with
`teacher_config`, so each setting has one flag name and one default everywhere. Older spellings
still work, hidden from --help: `--model` (datagen's name for `--teacher-model`) and `--attempts`
(eval's name for `--answer-tries`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from llavakit.cli import CommandError

MODEL_FLAG = "--teacher-model"


class _Remembered(argparse.Action):
    """Stores the value and which spelling of the option gave it (for error messages)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_flag", option_string)


def add_teacher_arguments(
    parser: argparse.ArgumentParser, role: str = "teacher", generating: bool = False
) -> None:
    """Add the teacher option group. `generating` (data generation) adds the choice of the
    synthetic world's symbolic teacher and the sampling temperature."""
    group = parser.add_argument_group(f"{role} (an OpenAI-compatible LLM)")
    if generating:
        group.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
        group.add_argument(
            "--teacher",
            choices=("openai", "symbolic"),
            default="openai",
            help="an OpenAI-compatible LLM (default) or the synthetic world's symbolic teacher",
        )
    group.add_argument(
        "--base-url",
        default=os.environ.get("OPENAI_BASE_URL"),
        help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (default: $OPENAI_BASE_URL)",
    )
    group.add_argument(
        MODEL_FLAG,
        action=_Remembered,
        default=os.environ.get("OPENAI_MODEL"),
        help="teacher model name (default: $OPENAI_MODEL); the API key is read from $OPENAI_API_KEY",
    )
    group.add_argument(
        "--model", action=_Remembered, dest="teacher_model", default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )  # fmt: skip
    group.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    group.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    group.add_argument(
        "--max-tries", type=int, default=5, help="tries per request on 429/5xx/timeouts"
    )
    group.add_argument(
        "--answer-tries",
        type=int,
        default=3,
        help="tries per question when a reply is unparsable (LLaVA-Bench default: 1, as LLaVA)",
    )
    group.add_argument(
        "--attempts", type=int, dest="answer_tries", default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )  # fmt: skip
    group.add_argument("--price-input", type=float, default=0.0, help="price per 1M prompt tokens")
    group.add_argument(
        "--price-output", type=float, default=0.0, help="price per 1M completion tokens"
    )
    group.add_argument("--max-cost", type=float, help="stop sending once this cost is reached")
    group.add_argument("--max-requests", type=int, help="stop after this many HTTP requests")
    group.add_argument(
        "--cache", type=Path, help="SQLite answer cache (default: <output stem>.cache.sqlite)"
    )


def teacher_config(args: argparse.Namespace, default_cache: Path | None = None):
    """TeacherConfig from the teacher options; None when the symbolic teacher was chosen."""
    if getattr(args, "teacher", "openai") == "symbolic":
        return None
    from llavakit.datagen.teacher import TeacherConfig

    if not args.teacher_model:
        flag = getattr(args, "teacher_model_flag", None) or MODEL_FLAG
        raise CommandError(f"{flag} is required with the LLM teacher (or set OPENAI_MODEL)")
    return TeacherConfig(
        model=args.teacher_model,
        base_url=args.base_url,
        concurrency=args.concurrency,
        timeout_s=args.timeout,
        max_tries=args.max_tries,
        max_answer_tries=args.answer_tries,
        price_input_per_1m=args.price_input,
        price_output_per_1m=args.price_output,
        max_cost=args.max_cost,
        max_requests=args.max_requests,
        cache_path=args.cache or default_cache,
    )
