"""Atomic file writes: temporary file in the same directory, fsync, rename, fsync the directory.

A reader (or a resumed run) therefore sees either the old file or the complete new one, never a torn
write, even after ``kill -9`` or a power loss. Temporary names start with a dot so directory readers,
which skip hidden files, never pick them up.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a directory entry so a completed rename survives a crash."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path``; on clean exit fsync it and rename it over ``path``.

    When the block raises, the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    f = open(tmp, mode)  # noqa: SIM115 - closed below on both paths
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        f.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def remove_stale_temporaries(directory: str | os.PathLike[str]) -> int:
    """Delete temporary files left by a killed writer; returns how many were removed."""
    n = 0
    d = Path(directory)
    if not d.is_dir():
        return 0
    for p in d.glob(".*.tmp-*"):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            n += 1
    return n
