"""`llavakit data check FILE --image-folder DIR [--model CKPT]`."""

from __future__ import annotations


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="inspect and validate LLaVA data files")
    verbs = data.add_subparsers(dest="data_command", metavar="<verb>", required=True)
    check = verbs.add_parser(
        "check",
        help="validate records and summarise counts and lengths",
        description="Validate every record of a LLaVA JSON/JSONL file (turn order, <image> tags vs "
        "images, image files present, empty answers) and print counts, length percentiles and "
        "every bad record with its reason. Exit code 1 when any record is invalid.",
    )
    check.add_argument("file", help="LLaVA JSON or JSONL file")
    check.add_argument("--image-folder", default=".", help="folder the image paths are relative to")
    check.add_argument(
        "--model", help="llavakit checkpoint: measure real token lengths with its template"
    )
    check.set_defaults(func=_check)


def _check(args) -> int:
    from llavakit.data.check import check_data

    summary = check_data(args.file, args.image_folder, args.model)
    print(summary.render())
    return 1 if summary.problems or summary.unencodable else 0
