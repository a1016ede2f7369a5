"""Every command line the README and docs/ show is parsed as a user would type it.

`medsci ...` examples go through medsci's own argument parser (a synopsis with `[...]`, `|` or `...` has each of
its options checked against the command instead); `snakemake ...` examples go through Snakemake's parser, and
their presets and `--config` overrides through the workflow's settings check (workflow_settings + schema), so an
example whose options or settings the code no longer takes fails here.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from medsci.cli import build_parser
from medsci.config import config_from_dict, workflow_settings

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
INLINE = re.compile(r"`((?:medsci|snakemake) [^`]+)`")
SYNOPSIS = re.compile(r"\[|\.\.\.|\\\||<")


def command_lines(text: str) -> list[str]:
    """Command lines in fenced blocks (backslash continuations joined) and in inline code spans."""
    found, fenced, pending, prose = [], False, "", []
    for line in text.splitlines():
        if line.strip().startswith("```"):
            fenced, pending = not fenced, ""
            continue
        if fenced:
            line = pending + line.strip()
            pending = ""
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            for part in line.split("&&"):
                if part.strip().startswith(("medsci ", "snakemake ")):
                    found.append(part.strip())
        else:
            prose.append(line.strip())
    # An inline code span may run over a line break.
    found.extend(" ".join(m.group(1).split()) for m in INLINE.finditer(" ".join(prose)))
    return found


def examples(program: str) -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        for line in command_lines(doc.read_text(encoding="utf-8")):
            if line.split()[0] == program and not re.match(r"medsci [\w <>-]+: ", line):  # not an error message shown
                out.append((doc.name, line))
    return out


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def _command(tokens: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The deepest sub-command parser the tokens name, and the tokens after it."""
    parser, rest = build_parser(), tokens[1:]
    while rest and rest[0].split("|")[0] in _subparsers(parser):  # "train|sample": the first of the alternatives
        parser, rest = _subparsers(parser)[rest[0].split("|")[0]], rest[1:]
    return parser, rest


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


MEDSCI = examples("medsci")
SNAKEMAKE = examples("snakemake")


def test_the_docs_show_examples_of_both_programs():
    assert len(MEDSCI) >= 20 and len(SNAKEMAKE) >= 5
    assert "medsci drr --ct CT --angles 0,0,0 0,0,10 --output DIR" in [line for _, line in MEDSCI]


@pytest.mark.parametrize("doc,line", MEDSCI, ids=[f"{d}:{line[:60]}" for d, line in MEDSCI])
def test_medsci_example_parses(doc, line, capsys):
    tokens = shlex.split(line.replace("\\|", "|"))
    parser, rest = _command(tokens)
    assert parser.prog != "medsci" or rest in ([], ["--help"]), f"{doc}: {line!r} names no medsci command"
    named = {t.split("=")[0] for t in re.findall(r"(?<!\S)--[\w-]+(?:=\S+)?", line)}
    assert named <= _options(parser) | {"--help"}, f"{doc}: {line!r}: no option {sorted(named - _options(parser))}"
    if SYNOPSIS.search(line) or doc == "bad-input.md" or not rest or "--help" in rest:
        return  # a synopsis, a name in prose, or the bad-input catalogue's deliberately wrong commands
    try:
        _, unknown = parser.parse_known_args(rest)
    except SystemExit:
        # Prose may show a command with only the options it talks about, or a placeholder (T, DIR) for a value.
        message = capsys.readouterr().err
        placeholder = re.search(r"argument [\w-]+: '([A-Z][A-Z_]*)'", message)
        mention = "expected one argument" in message and tokens[-1].startswith("--")
        assert "the following arguments are required" in message or mention or placeholder, \
            f"{doc}: {line!r}: {message.strip()}"
    else:
        assert not unknown, f"{doc}: {line!r}: unrecognized {unknown}"


def test_a_wrong_example_is_caught():
    parser, rest = _command(shlex.split("medsci drr --ct CT --angels 0,0,10 --output DIR"))
    with pytest.raises(SystemExit):
        parser.parse_args(rest)


@pytest.mark.parametrize("doc,line", SNAKEMAKE, ids=[f"{d}:{line[:60]}" for d, line in SNAKEMAKE])
def test_snakemake_example_parses_and_its_settings_validate(doc, line):
    from snakemake.cli import get_argument_parser, parse_config

    tokens = shlex.split(line.replace("--cores N", "--cores 2"))[1:]
    args = get_argument_parser().parse_args(tokens)
    presets = [str(REPO / p) for p in (args.configfile or []) if str(p).startswith("configs/")]
    if args.configfile and not presets:
        return  # the user's own preset (my.yaml): nothing of ours to check
    for profile in [args.workflow_profile, *([args.profile] if args.profile else [])]:
        if profile and str(profile).startswith("configs/"):
            assert (REPO / profile / "config.yaml").is_file(), f"{doc}: {line!r}: no profile {profile}"
    settings = workflow_settings(presets or [str(REPO / "configs" / "demo.yaml")], parse_config(args.config or []))
    config_from_dict(settings, f"{doc}: {line}")
