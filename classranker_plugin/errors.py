"""Errors that reach the user: each names the file at fault and how to fix it."""
from __future__ import annotations

from typing import Optional


class InputError(ValueError):
    """Bad input, detected before any work is done.

    ``str(error)`` reads ``"<path>: <message>. Fix: <fix>"`` so that a log line alone tells the
    user what is wrong and what to do.
    """

    def __init__(self, message: str, path: Optional[str] = None, fix: Optional[str] = None):
        self.message = message
        self.path = None if path is None else str(path)
        self.fix = fix
        text = message if self.path is None else f"{self.path}: {message}"
        if fix:
            text = f"{text.rstrip('.')}. Fix: {fix}"
        super().__init__(text)
