"""Small helpers for data-stage tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_jsonl(path: Path, rows: list, *, raw_lines: dict[int, bytes] | None = None) -> Path:
    """Write rows as JSONL; ``raw_lines`` puts literal bytes at given 0-based line positions."""
    lines = [(json.dumps(r, ensure_ascii=False) + "\n").encode() for r in rows]
    for pos, raw in sorted((raw_lines or {}).items()):
        lines.insert(pos, raw)
    path.write_bytes(b"".join(lines))
    return path


def read_all(directory: Path) -> list[dict[str, np.ndarray]]:
    from ipt_engine.data.shard_reader import iter_samples

    return list(iter_samples(directory))


def as_pairs(samples: list[dict[str, np.ndarray]]) -> list[tuple[list[int], list[int]]]:
    return [(s["tokens"].tolist(), s["doc_lens"].tolist()) for s in samples]
