"""Expanding the INPUT arguments of a stage into an ordered list of sources.

The rule (docs/ARCHITECTURE.md, "What every stage shares"): a directory is read recursively, sorted
by path, taking ``*.jsonl``, ``*.jsonl.gz``, ``*.jsonl.zst``, ``*.parquet`` and ``*.txt``; hidden
files, ``manifest.json`` and ``rejects.jsonl`` are skipped. A directory written by
``datasets.Dataset.save_to_disk`` is one source. The order is part of every stage's determinism, so it
never depends on the file system's listing order.
"""

from __future__ import annotations

import os
from pathlib import Path

from ipt_engine.errors import UserError

SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet", ".txt")
SKIPPED_NAMES = {"manifest.json", "rejects.jsonl"}


def is_hf_dataset_dir(path: Path) -> bool:
    """True for a directory written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    return path.is_dir() and (
        (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()
    )


def has_supported_suffix(name: str) -> bool:
    return name.endswith(SUFFIXES)


def _walk(directory: Path) -> list[Path]:
    found: list[Path] = []
    for root, dirs, files in os.walk(directory):
        root_path = Path(root)
        keep = []
        for d in dirs:
            if d.startswith("."):
                continue
            sub = root_path / d
            if is_hf_dataset_dir(sub):
                found.append(sub)
            else:
                keep.append(d)
        dirs[:] = keep
        for name in files:
            if name.startswith(".") or name in SKIPPED_NAMES or not has_supported_suffix(name):
                continue
            found.append(root_path / name)
    return sorted(found, key=lambda p: str(p))


def expand_inputs(paths: list[str] | tuple[str, ...]) -> list[Path]:
    """Turn the INPUT arguments into sources, in order; raise :class:`UserError` for a bad argument."""
    if not paths:
        raise UserError("no input given")
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise UserError(f"{raw}: no such file or directory")
        if p.is_dir():
            if is_hf_dataset_dir(p):
                out.append(p)
                continue
            files = _walk(p)
            if not files:
                raise UserError(
                    f"{raw}: directory holds no readable input ({', '.join('*' + s for s in SUFFIXES)})"
                )
            out.extend(files)
        else:
            if not has_supported_suffix(p.name):
                raise UserError(
                    f"{raw}: unsupported file type (expected one of {', '.join(SUFFIXES)}, "
                    "or a save_to_disk directory)"
                )
            out.append(p)
    return out
