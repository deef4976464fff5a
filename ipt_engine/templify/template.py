"""Single-pass string templates with ``{name}`` fields.

Templates are filled in one pass over the *template*, never over the values, so a context or an answer
that happens to contain ``{question}`` or ``{answer}`` is copied as it is and cannot be filled a second
time (``str.replace`` chains do that, and ``str.format`` chokes on stray braces in template text).
Templates are parsed once, when the library is imported; filling is a join of literals and values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_FIELD = re.compile(r"\{([a-z_]+)\}")


class Template:
    """A parsed template; ``fill(values)`` substitutes every field, and raises on a missing one."""

    __slots__ = ("source", "_parts", "fields")

    def __init__(self, source: str) -> None:
        self.source = source
        parts: list[tuple[bool, str]] = []
        last = 0
        for m in _FIELD.finditer(source):
            if m.start() > last:
                parts.append((False, source[last : m.start()]))
            parts.append((True, m.group(1)))
            last = m.end()
        if last < len(source):
            parts.append((False, source[last:]))
        self._parts = tuple(parts)
        self.fields = frozenset(p for is_field, p in parts if is_field)

    def fill(self, values: Mapping[str, str]) -> str:
        return "".join(values[p] if is_field else p for is_field, p in self._parts)

    def __repr__(self) -> str:
        return f"Template({self.source!r})"


def placeholders(text: str) -> set[str]:
    """The ``{name}`` fields that appear in ``text`` (used to prove none leaks into an output)."""
    return set(_FIELD.findall(text))
