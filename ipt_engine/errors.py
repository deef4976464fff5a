"""User-facing errors.

A :class:`UserError` is bad input or a bad option, not a bug: the CLI prints its message on one line and
exits with status 2, without a traceback. Messages name the file, the record and what is wrong, so a user
can fix the input without reading our code.
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input or options; printed as one line, exit status 2."""


def where(source: str, index: int | None = None, unit: str = "line") -> str:
    """Render a location as ``file:line`` (or ``file`` when the whole file is at fault)."""
    return f"{source}:{index}" if index is not None else source
