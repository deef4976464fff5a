"""Splitting a conversion's inputs into disjoint ranges that independent tasks convert.

A range is a list of :class:`Segment` s, consecutive in input order: small files are grouped until a
range holds about ``range_bytes`` of input, and a large file is cut into pieces of about that size —
plain JSONL at line boundaries (a byte offset plus the number of lines before it, so a task seeks
straight there and error messages still name the file's own line numbers), Parquet at row-group
boundaries (a record range). Compressed JSONL, text files and ``save_to_disk`` directories cannot be
entered in the middle cheaply and stay whole.

The plan is a pure function of the inputs and ``range_bytes``; it is stored in the output's manifest,
so a resumed run, on any cluster, converts exactly the ranges the first run planned.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_BLOCK = 1 << 22


@dataclass(frozen=True)
class Segment:
    """Records ``start + 1`` .. ``stop`` of one source (``stop`` None: to its end)."""

    path: str
    start: int = 0
    stop: int | None = None
    byte_start: int | None = None  # plain JSONL: offset of line start + 1
    byte_end: int | None = None  # informational: where the next segment of the file begins

    @property
    def seek(self) -> tuple[int, int] | None:
        return None if self.byte_start is None else (self.byte_start, self.start)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Segment:
        return cls(**d)


def _source_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def _jsonl_cuts(path: Path, every: int) -> list[tuple[int, int]]:
    """(byte offset, lines before it) of line starts about ``every`` bytes apart, excluding 0 and EOF."""
    cuts: list[tuple[int, int]] = []
    lines = pos = 0
    want = every
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            i = 0  # newlines of block[:i] are counted in ``lines``
            while want - pos < len(block):
                j = block.find(b"\n", max(i, want - pos - 1))
                if j < 0:
                    break
                lines += block.count(b"\n", i, j + 1)
                i = j + 1
                cuts.append((pos + i, lines))
                want = pos + i + every
            lines += block.count(b"\n", i)
            pos += len(block)
    return [(b, n) for b, n in cuts if b < pos]


def _parquet_cuts(path: Path, every: int) -> list[int]:
    """Row counts before row groups that begin about ``every`` (compressed) bytes apart."""
    import pyarrow.parquet as pq

    md = pq.ParquetFile(path).metadata
    cuts: list[int] = []
    rows = acc = 0
    for g in range(md.num_row_groups):
        if acc >= every and rows:
            cuts.append(rows)
            acc = 0
        rg = md.row_group(g)
        rows += rg.num_rows
        acc += rg.total_byte_size
    return cuts


def _split(path: Path, size: int, every: int) -> list[Segment]:
    """One source as segments of about ``every`` bytes (one segment when it cannot be split)."""
    name = str(path)
    if path.is_file() and path.name.endswith(".jsonl") and size > every:
        cuts = _jsonl_cuts(path, every)
        bounds = [(0, 0), *cuts]
        segs = []
        for k, (b, lines) in enumerate(bounds):
            last = k + 1 == len(bounds)
            segs.append(Segment(name, start=lines, stop=None if last else bounds[k + 1][1],
                                byte_start=b, byte_end=None if last else bounds[k + 1][0]))
        return segs
    if path.is_file() and path.name.endswith(".parquet") and size > every:
        rows = [0, *_parquet_cuts(path, every)]
        return [Segment(name, start=r, stop=rows[k + 1] if k + 1 < len(rows) else None) for k, r in enumerate(rows)]
    return [Segment(name)]


def plan_ranges(sources: list[Path], range_bytes: int) -> list[list[Segment]]:
    """Disjoint ranges covering ``sources`` in order, each about ``range_bytes`` of input."""
    ranges: list[list[Segment]] = []
    group: list[Segment] = []
    group_bytes = 0
    for path in sources:
        size = _source_bytes(path)
        pieces = _split(path, size, range_bytes)
        if len(pieces) > 1:
            if group:
                ranges.append(group)
                group, group_bytes = [], 0
            ranges.extend([p] for p in pieces)
            continue
        if group and group_bytes + size > range_bytes:
            ranges.append(group)
            group, group_bytes = [], 0
        group.append(pieces[0])
        group_bytes += size
    if group:
        ranges.append(group)
    return ranges
