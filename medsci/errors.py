"""User-facing errors: one line naming the file and the reason, never a traceback."""

from __future__ import annotations

import os
import re
from pathlib import Path

# C0/C1 controls and the Unicode line/paragraph separators: a newline in a name would start a new Markdown section
# in a model card, or a new line in a report or DICOM text.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class MedsciError(Exception):
    """An error caused by the user's input or configuration.

    The CLI prints ``str(err)`` on one line and exits non-zero; nothing else is shown.
    """

    def __init__(self, reason: str, path: str | Path | None = None):
        self.reason = reason
        # A name that is not UTF-8 is shown with its bytes escaped (\xff), printable on any terminal or log.
        self.path = None if path is None else os.fsencode(path).decode("utf-8", "backslashreplace")
        super().__init__(f"{self.path}: {reason}" if self.path else reason)


class InputError(MedsciError):
    """An input file or folder is unreadable, malformed or inconsistent."""


MAX_PLAIN_TEXT = 200  # characters of a name or free text (a model card's title, a DICOM description)


def check_plain_text(value: str, what: str, path: str | Path | None = None) -> str:
    """The one check of names and free text that go into model cards, manifests and DICOM tags: one line of
    printable text (no control characters) of at most MAX_PLAIN_TEXT characters; returns ``value``."""
    if len(value) > MAX_PLAIN_TEXT:  # a 100,000-character name made a model card of one heading
        raise InputError(f"{what} of {len(value):,} characters is longer than the limit of {MAX_PLAIN_TEXT}; use a "
                         "shorter one", path)
    bad = _CONTROL.search(value)
    if bad:
        raise InputError(f"{what} {value!r} holds the control character U+{ord(bad.group()):04X}; use one line of "
                         "printable text", path)
    return value


class ConfigError(MedsciError):
    """A configuration or checkpoint does not fit the data or the schema."""
