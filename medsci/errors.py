"""User-facing errors: one line naming the file and the reason, never a traceback."""

from __future__ import annotations

import os
from pathlib import Path


class MedsciError(Exception):
    """An error caused by the user's input or configuration.

    The CLI prints ``str(err)`` on one line and exits non-zero; nothing else is shown.
    """

    def __init__(self, reason: str, path: str | Path | None = None):
        self.reason = reason
        # A name that is not UTF-8 is shown with its bytes escaped (\\xff), printable on any terminal or log.
        self.path = None if path is None else os.fsencode(path).decode("utf-8", "backslashreplace")
        super().__init__(f"{self.path}: {reason}" if self.path else reason)


class InputError(MedsciError):
    """An input file or folder is unreadable, malformed or inconsistent."""


class ConfigError(MedsciError):
    """A configuration or checkpoint does not fit the data or the schema."""
