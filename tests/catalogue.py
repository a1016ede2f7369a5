"""The bad-input catalogue (docs/bad-input.md) as test data: each section's rows, with the message the user
is promised, so that a test checks the words it prints and not only the row id.

A row is ``| id | entry point | bad input | what the user gets |``; the promised messages are the backticked
``medsci ...`` texts in its last cell. Paths are shortened to their last component in the table, so the
command's output is compared with its folders stripped.
"""

from __future__ import annotations

import re
from pathlib import Path

CATALOGUE = Path(__file__).resolve().parents[1] / "docs" / "bad-input.md"
# an absolute path's folders: only where a path starts (not the "/c1/" of a relative cases/c1/prep, nor the
# "/object/" of a YAML tag python/object/apply)
_FOLDERS = re.compile(r"(?<![\w.-])(?:[A-Za-z]:)?(?:/[^/\s:'\"()`]+)+/")


def section_rows(title: str, prefix: str) -> dict[str, str]:
    """Row id -> last cell, for the rows of section ``## title`` whose id is ``prefix`` + digits."""
    text = CATALOGUE.read_text(encoding="utf-8")
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(rf"^\|\s*({re.escape(prefix)}\d+)\s*\|", line)
        if match:
            assert match.group(1) not in rows, f"row {match.group(1)} appears twice in {CATALOGUE.name}"
            rows[match.group(1)] = line.rstrip().rstrip("|").rsplit("|", 1)[1]
    return rows


def promised_messages(cell: str) -> list[str]:
    """The backticked ``medsci ...`` messages of a row's last cell."""
    return [m for m in re.findall(r"`([^`]+)`", cell) if m.startswith("medsci")]


def without_folders(output: str) -> str:
    return _FOLDERS.sub("", output)


def assert_promised(cell: str, output: str) -> None:
    """Every message the row promises appears in the output (folders stripped); a row must promise one."""
    messages = promised_messages(cell)
    assert messages, f"catalogue row promises no `medsci ...` message: {cell.strip()}"
    shown = without_folders(output)
    for message in messages:
        assert message in shown, f"promised {message!r}\ngot {shown!r}"


def row_registry():
    """``(ROWS, row)``: ``@row("R01")`` registers a test module's builder of that catalogue row in ``ROWS``."""
    rows: dict = {}

    def row(rid: str):
        def register(fn):
            assert rid not in rows, f"row {rid} registered twice"
            rows[rid] = fn
            return fn
        return register
    return rows, row
