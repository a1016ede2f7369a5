"""The ``medsci`` command line.

Each sub-command lives in ``medsci/commands/<name>.py`` and exposes ``register(subparsers)``; heavy
imports (torch, MONAI) happen inside the handlers so ``medsci --help`` stays instant. Errors caused by
the user's input are :class:`medsci.errors.MedsciError`: printed as one line, exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from medsci import __version__
from medsci.errors import MedsciError

# Modules under medsci.commands, in the order they appear in --help.
COMMAND_MODULES = [
    "demo",
    "info",
    "metrics",
    "preprocess",
    "train",
    "sample",
    "evaluate",
    "interpolate",
    "report",
    "bench",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medsci",
        description="Diffusion pipelines for medical and scientific volumes.",
    )
    parser.add_argument("--version", action="version", version=f"medsci {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"medsci.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"medsci.commands.{name}":
                continue  # command not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.handler(args)
    except MedsciError as err:
        print(f"medsci {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"medsci {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
