"""The ``medsci`` command line.

Core commands live in ``medsci/commands/<name>.py`` and expose ``register(subparsers)``. The generic verbs
(``demo-data``, ``preprocess``, ``train``, ``sample``, ``evaluate``) get one sub-command per registered generator
that implements them, and a generator may add top-level commands of its own (``medsci.registry``). Heavy imports
(torch, MONAI) happen inside the handlers so ``medsci --help`` stays instant. Errors caused by the user's input
are :class:`medsci.errors.MedsciError`: printed as one line, exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from medsci import __version__, registry
from medsci.errors import MedsciError

# Core commands (medsci/commands/<name>.py), placed around the generators' verbs in --help.
CORE_BEFORE = ["info", "metrics"]
CORE_AFTER = ["bench"]


class Parser(argparse.ArgumentParser):
    """Argument errors on one line, like every other medsci error (argparse would print the usage first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from medsci.commands.verbs import register_verb

    tasks = registry.tasks()
    epilog = "generators: " + "; ".join(f"{t.name} ({t.title})" for t in tasks.values()) if tasks else None
    parser = Parser(
        prog="medsci",
        description="Diffusion pipelines for medical and scientific volumes.",
        epilog=epilog,
    )
    parser.add_argument("--version", action="version", version=f"medsci {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    register_verb(sub, "demo-data", registry.VERBS["demo-data"])
    for name in CORE_BEFORE:
        importlib.import_module(f"medsci.commands.{name}").register(sub)
    for verb in ("preprocess", "train", "sample", "evaluate"):
        register_verb(sub, verb, registry.VERBS[verb])
    for task in tasks.values():
        hook = getattr(task.commands_module(), "register_commands", None)
        if hook is not None:
            hook(sub)
    for name in CORE_AFTER:
        importlib.import_module(f"medsci.commands.{name}").register(sub)
    return parser


def _check_names(args) -> None:
    """Every path and name given on the command line is UTF-8 (what the folders hold is checked where it is read)."""
    from medsci.io.paths import check_utf8_name

    for value in vars(args).values():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, (str, os.PathLike)):
                check_utf8_name(item)


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
    except MedsciError as err:  # e.g. MEDSCI_TASKS names a module that does not import
        print(f"medsci: error: {err}", file=sys.stderr)
        return 2
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version, or an argument error already printed on one line
        return 0 if done.code is None else done.code if isinstance(done.code, int) else 2
    command = " ".join(filter(None, (args.command, getattr(args, "task", None))))
    try:
        _check_names(args)
        result = args.handler(args)
    except MedsciError as err:
        print(f"medsci {command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # what no reader or writer turned into a MedsciError: still one line naming the path
        where = f"{os.fsdecode(err.filename)}: " if err.filename is not None else ""
        print(f"medsci {command}: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"medsci {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
