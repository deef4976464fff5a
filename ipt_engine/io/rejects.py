"""``rejects.jsonl``: the records a stage skipped under ``--on-error skip``, with the reason.

The file is append-only, and its length is saved in the manifest checkpoint with every committed unit
of output. A resumed run truncates it back to that length before going on, so a record rejected in a
unit that was redone is not listed twice.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any

REJECTS = "rejects.jsonl"


class RejectLog:
    def __init__(self, directory: str | Path, *, keep_bytes: int = 0) -> None:
        self.path = Path(directory) / REJECTS
        self.count = 0
        self._f: IO[bytes] | None = None
        if self.path.exists():
            with open(self.path, "r+b") as f:
                f.truncate(keep_bytes)
        self._size = keep_bytes if self.path.exists() else 0

    def add(self, source: str, index: int, error: str, record: Any = None) -> None:
        if self._f is None:
            self._f = open(self.path, "ab")  # noqa: SIM115 - closed in close()
        row = {"source": source, "index": index, "error": error}
        if record is not None:
            row["record"] = record
        data = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        self._f.write(data)
        self._size += len(data)
        self.count += 1

    @property
    def size(self) -> int:
        """Bytes in the file so far, flushed or not (a resume point records this)."""
        return self._size

    def sync(self) -> int:
        """Make everything added so far durable and return the file length for the checkpoint."""
        if self._f is not None:
            self._f.flush()
            os.fsync(self._f.fileno())
        return self._size

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> RejectLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
