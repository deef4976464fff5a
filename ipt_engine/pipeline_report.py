"""The table ``ipt pipeline`` ends with: per stage, items in → out, seconds and output path; then plots.

Counts come from each output directory's ``manifest.json``, the record every stage keeps, not from a
stage's return value: they are then right however the stage ran (in this process, in the synthesis
environment's interpreter, or in an earlier run that ``--resume`` now skips). A stage whose output was
already complete before the step is marked ``reused``, so a fast rerun does not read as a fast stage.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ipt_engine.summary import format_table

# stage -> (stats key counted in, unit in, count out, unit out); "rows" counts the parts' rows.
_COUNTS: dict[str, tuple[str, str, str, str]] = {
    "synthesize": ("texts", "texts", "rows", "collections"),
    "templify": ("collections", "collections", "texts", "texts"),
    "convert": ("documents", "docs", "samples", "samples"),
}


@dataclass
class Count:
    n: int
    unit: str

    def __str__(self) -> str:
        return f"{self.n:,} {self.unit}"


@dataclass
class Row:
    stage: str
    output: str = ""
    items_in: Count | None = None
    items_out: Count | None = None
    seconds: float | None = None
    reused: bool = False


def manifest_counts(directory: str | Path) -> tuple[Count | None, Count | None]:
    """(items in, items out) of a stage's output directory, from its manifest; (None, None) without one."""
    from ipt_engine.io.manifest import load_manifest

    manifest = load_manifest(directory) if Path(directory).is_dir() else None
    if manifest is None or manifest.get("stage") not in _COUNTS:
        return None, None
    key_in, unit_in, key_out, unit_out = _COUNTS[manifest["stage"]]
    stats: dict[str, Any] = manifest.get("stats") or {}
    rows = sum(int(o.get("rows", 0)) for o in manifest.get("outputs", []) if isinstance(o, dict))

    def count(key: str, unit: str) -> Count | None:
        value = rows if key == "rows" else stats.get(key)
        return None if value is None else Count(int(value), unit)

    return count(key_in, unit_in), count(key_out, unit_out)


def _is_complete(directory: Path) -> bool:
    from ipt_engine.io.manifest import load_manifest

    manifest = load_manifest(directory) if directory.is_dir() else None
    return bool(manifest and manifest.get("complete"))


@dataclass
class PipelineReport:
    """Rows in the order the steps ran; :meth:`step` times one and fills its counts from the manifest."""

    title: str = "ipt pipeline"
    rows: list[Row] = field(default_factory=list)

    @contextlib.contextmanager
    def step(self, stage: str, output: str | Path | None = None) -> Iterator[Row]:
        """Time the block as ``stage``. The row is yielded so the block can set what the manifest
        cannot say (an output known only afterwards, counts of a step without a manifest)."""
        row = Row(stage, str(output) if output is not None else "")
        row.reused = output is not None and _is_complete(Path(output))
        t0 = time.perf_counter()
        yield row
        row.seconds = time.perf_counter() - t0
        if row.output and (row.items_in is None and row.items_out is None):
            row.items_in, row.items_out = manifest_counts(row.output)
        self.rows.append(row)

    def render(self) -> str:
        """The table as text: a title line, a header, a rule, one line per row."""
        width_in = max((len(str(r.items_in)) for r in self.rows if r.items_in is not None), default=0)
        body = []
        for r in self.rows:
            if r.items_in is None and r.items_out is None:
                items = ""
            else:
                left = str(r.items_in) if r.items_in is not None else "-"
                right = str(r.items_out) if r.items_out is not None else "-"
                items = f"{left.rjust(width_in)} → {right}"
            seconds = "" if r.seconds is None else f"{r.seconds:.1f}"
            if r.reused:
                seconds = f"{seconds} (reused)".strip()
            body.append([r.stage, items, seconds, r.output])
        total = sum(r.seconds or 0.0 for r in self.rows)
        table = format_table(["stage", "items in → out", "seconds", "output"], body, align="<<><")
        return f"{self.title}: {len(self.rows)} steps, {total:.1f} s\n{table}"

    def print(self, file: Any = None) -> None:
        print(self.render(), file=file or sys.stdout)
