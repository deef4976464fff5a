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
