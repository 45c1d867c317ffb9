"""`llavakit datagen llavar <step>`: LLaVAR's text-rich data pipeline (filter, cluster, noisy,
conversations). Registered by `llavakit.cli.datagen`."""

from __future__ import annotations

import argparse
from pathlib import Path

from llavakit.cli import CommandError
from llavakit.cli.teacher_options import add_teacher_arguments, teacher_config
from llavakit.datagen.ocr import DEFAULT_MIN_CONFIDENCE, DEFAULT_SHORT_EDGE, ENGINE_NAMES


# ---- shared arguments ----------------------------------------------------------------------------
def _add_inputs(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("images")
    group.add_argument(
        "--images", type=Path, help="image folder (scanned recursively; with --list, their root)"
    )
    group.add_argument(
        "--list",
        type=Path,
        nargs="+",
        default=[],
        dest="lists",
        metavar="JSONL",
        help="image lists from an earlier step (kept.jsonl, cluster_007.jsonl, ...)",
    )
    group.add_argument("--num-shards", type=int, default=1, help="split the images in N shards")
    group.add_argument("--shard-index", type=int, default=0, help="the shard this run does")
    group.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_ocr(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("OCR")
    group.add_argument("--engine", choices=ENGINE_NAMES, default="rapidocr", help="OCR engine")
    group.add_argument(
        "--full-size", action="store_true", help="OCR at full resolution, not a 384 px short edge"
    )
    group.add_argument(
        "--min-confidence",
        type=float,
        metavar="C",
        help="ignore OCR lines below this confidence (default 0.7)",
    )
    group.add_argument(
        "--workers", type=int, default=1, help="OCR processes (e.g. the number of CPU cores)"
    )


def _shard(args: argparse.Namespace):
    from llavakit.datagen.llavar.items import Shard

    return Shard(args.num_shards, args.shard_index)


def _ocr_config(args: argparse.Namespace):
    from llavakit.datagen.llavar.ocr import OcrConfig

    return OcrConfig(engine=args.engine, short_edge=None if args.full_size else DEFAULT_SHORT_EDGE)


def _min_confidence(args: argparse.Namespace) -> float:
    return DEFAULT_MIN_CONFIDENCE if args.min_confidence is None else args.min_confidence


def _calling(function, *arguments) -> int:
    """Call a step, turning a missing OCR engine into a clean command error."""
    from llavakit.datagen.ocr.engines import OcrEngineUnavailable

    try:
        print(function(*arguments))
    except OcrEngineUnavailable as error:
        raise CommandError(str(error)) from error
    return 0


# ---- filter --------------------------------------------------------------------------------------
def _run_filter(args: argparse.Namespace) -> int:
    from llavakit.datagen.llavar.filter import FilterOptions, FilterThresholds, run_filter

    given = {
        name: getattr(args, name)
        for name in (
            "min_confidence",
            "min_word_letters",
            "min_words",
            "min_text_area",
            "min_clip_probability",
        )
        if getattr(args, name) is not None
    }
    thresholds = FilterThresholds(**given)
    options = FilterOptions(
        out=args.out,
        images=args.images,
        lists=tuple(args.lists),
        clip=args.clip,
        thresholds=thresholds,
        ocr=_ocr_config(args),
        shard=_shard(args),
        workers=args.workers,
        device=args.device,
        progress=not args.no_progress,
    )
    return _calling(run_filter, options)


def _add_filter(steps: argparse._SubParsersAction) -> None:
    parser = steps.add_parser(
        "filter",
        help="keep text-rich images (OCR text area + word count, optional CLIP zero-shot)",
        description="Score every image for text-richness and write kept.jsonl / dropped.jsonl "
        "with the scores and a histogram.png. Rerun with other thresholds to re-decide without "
        "reading the images again.",
    )
    _add_inputs(parser)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--clip", type=Path, help="local CLIP folder for zero-shot scores")
    parser.add_argument("--device", default="cpu", help="torch device for CLIP")
    _add_ocr(parser)
    group = parser.add_argument_group("thresholds")
    group.add_argument("--min-words", type=int, help="confident words (default 1)")
    group.add_argument(
        "--min-word-letters", type=int, help="letters for a word to count (default 3)"
    )
    group.add_argument(
        "--min-text-area",
        type=float,
        help="fraction of the image covered by text boxes (default 0.03)",
    )
    group.add_argument(
        "--min-clip-probability",
        type=float,
        help="CLIP zero-shot P(text-rich), with --clip (default 0.5)",
    )
    parser.set_defaults(func=_run_filter)


# ---- cluster -------------------------------------------------------------------------------------
def _run_cluster(args: argparse.Namespace) -> int:
    from llavakit.datagen.llavar.cluster import ClusterOptions, run_cluster

    options = ClusterOptions(
        out=args.out,
        clip=args.clip,
        k=args.k,
        images=args.images,
        lists=tuple(args.lists),
        cap=args.cap,
        seed=args.seed,
        sheet_size=args.sheet_size,
        shard=_shard(args),
        device=args.device,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    print(run_cluster(options))
    return 0


def _add_cluster(steps: argparse._SubParsersAction) -> None:
    parser = steps.add_parser(
        "cluster",
        help="k-means on CLIP image features, with a contact sheet per cluster",
        description="Embed images with a local CLIP vision tower, cluster them with k-means and "
        "write per cluster a contact sheet (cluster_NNN.png) and an image list "
        "(cluster_NNN.jsonl, capped with --cap) to feed the chosen clusters to later steps.",
    )
    _add_inputs(parser)
    parser.add_argument("--clip", type=Path, required=True, help="local CLIP folder")
    parser.add_argument("--k", type=int, required=True, help="number of clusters")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--cap", type=int, help="at most N images listed per cluster")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sheet-size", type=int, default=36, help="thumbnails per sheet")
    parser.add_argument("--device", default="cpu", help="torch device for CLIP")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.set_defaults(func=_run_cluster)


# ---- noisy ---------------------------------------------------------------------------------------
def _run_noisy(args: argparse.Namespace) -> int:
    from llavakit.datagen.llavar.noisy import NoisyOptions, run_noisy

    options = NoisyOptions(
        out=args.out,
        images=args.images,
        lists=tuple(args.lists),
        ocr=_ocr_config(args),
        min_confidence=_min_confidence(args),
        seed=args.seed,
        prompts_dir=args.prompts,
        shard=_shard(args),
        workers=args.workers,
        progress=not args.no_progress,
    )
    return _calling(run_noisy, options)


def _add_noisy(steps: argparse._SubParsersAction) -> None:
    parser = steps.add_parser(
        "noisy",
        help="stage-1 records: 'what text is in this image?' -> OCR paragraphs",
        description="One LLaVA record per image with confident text: a question drawn from "
        "read_text_questions.txt, answered by the OCR paragraphs. Images without text are "
        "skipped and counted. Rerun the same command to resume.",
    )
    _add_inputs(parser)
    parser.add_argument("--out", type=Path, required=True, help="output .json or .jsonl")
    parser.add_argument("--seed", type=int, default=0, help="seed of the question draws")
    parser.add_argument("--prompts", type=Path, help="folder with a read_text_questions.txt")
    _add_ocr(parser)
    parser.set_defaults(func=_run_noisy)


# ---- conversations -------------------------------------------------------------------------------
def _captioner(args: argparse.Namespace):
    if args.no_caption:
        return lambda image: ""
    from llavakit.datagen.llavar.conversations import engine_captioner

    try:
        return engine_captioner(args.captioner, device=args.device)
    except ImportError as error:
        raise CommandError(
            f"--captioner needs llavakit's inference engine (llavakit.infer): {error}"
        ) from error


def _run_conversations(args: argparse.Namespace) -> int:
    from llavakit.datagen.llavar.conversations import ConversationOptions, run_conversations

    options = ConversationOptions(
        out=args.out,
        images=args.images,
        lists=tuple(args.lists),
        ocr=_ocr_config(args),
        extra_engines=tuple(args.extra_engine),
        min_confidence=_min_confidence(args),
        captioner_name="none" if args.no_caption else str(args.captioner),
        prompts_dir=args.prompts,
        params={"temperature": args.temperature},
        shard=_shard(args),
        workers=args.workers,
        progress=not args.no_progress,
    )
    config = teacher_config(args)
    captioner = _captioner(args)
    if config is None:
        return _calling(run_conversations, options, captioner, None)
    from llavakit.datagen.teacher import TeacherError

    try:
        return _calling(run_conversations, options, captioner, config)
    except TeacherError as error:
        raise CommandError(str(error)) from error


def _add_conversations(steps: argparse._SubParsersAction) -> None:
    parser = steps.add_parser(
        "conversations",
        help="OCR-grounded conversations about text-rich images through a teacher",
        description="Tell a text-only teacher what OCR read in each image and how a captioner "
        "describes the image with its text painted out, and turn its Q&A into LLaVA records. "
        "Rerun the same command to resume.",
    )
    _add_inputs(parser)
    parser.add_argument("--out", type=Path, required=True, help="output .json or .jsonl")
    captioning = parser.add_mutually_exclusive_group(required=True)
    captioning.add_argument(
        "--captioner",
        type=Path,
        metavar="CKPT",
        help="llavakit checkpoint that captions the text-masked images",
    )
    captioning.add_argument(
        "--no-caption", action="store_true", help="give the teacher OCR only, no caption"
    )
    parser.add_argument("--device", default="auto", help="device of the captioner")
    parser.add_argument(
        "--extra-engine",
        choices=ENGINE_NAMES,
        action="append",
        default=[],
        help="a second OCR engine whose reading the teacher also sees (repeatable)",
    )
    parser.add_argument("--prompts", type=Path, help="folder replacing the built-in prompts")
    _add_ocr(parser)
    add_teacher_arguments(parser, generating=True)
    parser.set_defaults(func=_run_conversations)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `llavar` to the `llavakit datagen` kinds."""
    parser = subparsers.add_parser(
        "llavar",
        help="LLaVAR text-rich data: filter, cluster, noisy, conversations",
        description="LLaVAR's pipeline for text-rich images. Every step shards with "
        "--num-shards/--shard-index and resumes when rerun.",
    )
    steps = parser.add_subparsers(dest="llavar_step", metavar="<step>")
    parser.set_defaults(func=lambda args: parser.print_help() or 1)
    _add_filter(steps)
    _add_cluster(steps)
    _add_noisy(steps)
    _add_conversations(steps)
