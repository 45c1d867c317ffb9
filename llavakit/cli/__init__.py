"""`llavakit <verb>`: argument parsing only.

Each area of the toolkit owns one module here with a `register(subparsers)` function that adds
its verbs; every handler imports its library function lazily and calls it, so `--help` stays fast
and no logic lives in the command line layer.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from llavakit import __version__

# Areas in the order their verbs are listed by --help.
AREAS = ("world", "demo", "data", "train", "datagen", "ocr", "infer", "eval", "convert")


class CommandError(Exception):
    """An error the user can fix; printed without a traceback, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llavakit",
        description="Build, train, serve and evaluate LLaVA-family vision-language assistants.",
    )
    parser.add_argument("--version", action="version", version=f"llavakit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for area in AREAS:
        try:
            module = importlib.import_module(f"llavakit.cli.{area}")
        except ModuleNotFoundError as error:
            if error.name == f"llavakit.cli.{area}":
                continue  # area not built yet
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        result = args.func(args)
    except (CommandError, FileNotFoundError, ValueError) as error:
        if os.environ.get("LLAVAKIT_DEBUG"):
            raise  # full traceback for bug reports
        print(f"llavakit {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
