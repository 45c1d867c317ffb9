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


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a verb's options accepted anywhere among its positionals.

    Plain argparse stops filling a `nargs="*"` positional at the first option, so
    `llavakit train RECIPE --skip-bad-records a=1` would leave `a=1` unrecognised. A verb is
    parsed as argparse's intermixed parsing does (options first, then positionals); a parser
    that owns sub-commands, which intermixed parsing cannot take, parses as usual. Sub-parsers
    are made of this class too (argparse uses the parent's class).
    """

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._intermixing or self._subparsers is not None:
            return super().parse_known_args(args, namespace)
        self._intermixing = True  # parse_known_intermixed_args calls back in here, twice
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
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
