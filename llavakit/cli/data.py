"""`llavakit data check FILE --image-folder DIR [--model CKPT]`."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="inspect and validate LLaVA data files")
    verbs = data.add_subparsers(dest="data_command", metavar="<verb>", required=True)
    check = verbs.add_parser(
        "check",
        help="validate records, decode every image, summarise counts and lengths",
        description="Validate every record of a LLaVA JSON/JSONL file (turn order, <image> tags vs "
        "images, empty answers), decode every image it names (in parallel), and print counts, "
        "length percentiles and every bad record with its reason; the same checks `llavakit "
        "train` runs before it starts. Exit code 1 when any record is invalid.",
    )
    check.add_argument("file", help="LLaVA JSON or JSONL file")
    check.add_argument("--image-folder", default=".", help="folder the image paths are relative to")
    check.add_argument(
        "--model", help="llavakit checkpoint: measure real token lengths with its template"
    )
    check.add_argument("--workers", type=int, help="threads decoding images (default: all cores)")
    check.add_argument(
        "--cache",
        type=Path,
        help="JSON file remembering each image's verdict by size and mtime, so a rerun decodes "
        "only what changed (train keeps one as OUTPUT_DIR/image_check.json)",
    )
    check.add_argument("--no-progress", action="store_true", help="no progress bar")
    check.set_defaults(func=_check)


def _check(args) -> int:
    from llavakit.data.check import check_data

    summary = check_data(
        args.file,
        args.image_folder,
        args.model,
        image_cache=args.cache,
        workers=args.workers,
        progress=not args.no_progress,
    )
    print(summary.render())
    return 1 if summary.problems else 0
