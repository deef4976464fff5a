"""The closing summary every long command prints: aligned ``name  value`` lines under a title."""

from __future__ import annotations

import sys
from collections.abc import Iterable


def human(n: float) -> str:
    """1234567 -> '1.23M'; small numbers stay exact."""
    if isinstance(n, int) and abs(n) < 10_000:
        return str(n)
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.2f}" if isinstance(n, float) else str(n)


def print_summary(title: str, rows: Iterable[tuple[str, object]], file=None) -> None:
    file = file or sys.stdout
    rows = list(rows)
    width = max((len(k) for k, _ in rows), default=0)
    print(title, file=file)
    for k, v in rows:
        print(f"  {k.ljust(width)}  {v}", file=file)


def format_table(headers: list[str], rows: Iterable[list[str]], align: str | None = None) -> str:
    """Rows of strings as aligned columns under a header and a rule of dashes, two spaces apart.

    ``align`` has one character per column, ``<`` (left) or ``>`` (right); default all left. Trailing
    spaces are stripped, so the last column may be long without padding the others' lines.
    """
    rows = [list(r) for r in rows]
    align = align or "<" * len(headers)
    if len(align) != len(headers) or any(len(r) != len(headers) for r in rows):
        raise ValueError("every row, and align, must have one entry per header")
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if a == ">" else c.ljust(w) for c, w, a in zip(cells, widths, align)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])
