"""Streaming's ``MDSWriter``, made crash-safe and resumable.

The stock writer is the right encoder (the stock ``StreamingDataset`` must read what we write), but it
writes shard files in place and writes ``index.json`` from ``__exit__`` even when the block raised,
indexing partial data. This subclass changes exactly three things:

1. every shard file is written atomically (temporary file, fsync, rename);
2. after each shard is on disk, ``on_shard(shards, resume_point, stats)`` is called so the caller can
   commit a checkpoint that lists exactly the shards written so far and where to restart;
3. it can be reopened on such a checkpoint (``resume_shards``), continuing the shard numbering, and the
   index is written (atomically) only by :meth:`close` on success — never on an exception.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streaming import MDSWriter
from streaming.base.compression import compress

from ipt_engine.io.atomic import atomic_write_bytes

ShardCallback = Callable[[list[dict[str, Any]], Any, dict[str, int]], None]


class ResumableMDSWriter(MDSWriter):
    def __init__(
        self,
        *,
        out: str | os.PathLike,
        columns: dict[str, str],
        compression: str | None,
        size_limit: int,
        on_shard: ShardCallback,
        resume_shards: list[dict[str, Any]] | None = None,
        resume_stats: dict[str, int] | None = None,
    ) -> None:
        # The stock uploader refuses a non-empty local directory, and its exist_ok deletes it; a resumed
        # run must keep its shards. So the base class is pointed at an empty placeholder and then at the
        # real directory. Output is local-only (the uploader's remote is None), so nothing else reads it.
        out = Path(out)
        placeholder = out / f".writer-{os.getpid()}"
        placeholder.mkdir(parents=True, exist_ok=True)
        try:
            super().__init__(out=str(placeholder), columns=columns, compression=compression, size_limit=size_limit)
        finally:
            placeholder.rmdir()
        self.local = self.cloud_writer.local = str(out)
        self._on_shard = on_shard
        self._next_resume: Any = None
        self.flushed: dict[str, int] = dict(resume_stats or {})
        self._cached: dict[str, int] = {}
        if resume_shards:
            self.shards = list(resume_shards)

    # -- writing ---------------------------------------------------------------------------------
    def write_sample(self, sample: dict[str, Any], resume_point: Any, stats: dict[str, int]) -> None:
        """Write one sample; ``resume_point`` regenerates it and everything after it."""
        self._next_resume = resume_point
        self.write(sample)
        for k, v in stats.items():
            self._cached[k] = self._cached.get(k, 0) + v

    def _process_file(self, raw_data: bytes, raw_basename: str, zip_basename: str | None):
        raw_info = self._hash(raw_data, raw_basename)
        if zip_basename:
            data = compress(self.compression, raw_data)
            zip_info, name = self._hash(data, zip_basename), zip_basename
        else:
            data, zip_info, name = raw_data, None, raw_basename
        atomic_write_bytes(Path(self.local) / name, data)
        return raw_info, zip_info

    def flush_shard(self) -> None:
        super().flush_shard()
        for k, v in self._cached.items():
            self.flushed[k] = self.flushed.get(k, 0) + v
        self._cached = {}
        self._on_shard(self.shards, self._next_resume, dict(self.flushed))

    # -- finishing -------------------------------------------------------------------------------
    def close(self) -> None:
        """Flush the last shard and write ``index.json`` atomically. Call only on success."""
        if self.new_samples:
            self._next_resume = None  # nothing left to regenerate
            self.flush_shard()
            self._reset_cache()
        self.executor.shutdown(wait=True)
        index = {"version": 2, "shards": self.shards}
        atomic_write_bytes(Path(self.local) / "index.json", json.dumps(index, sort_keys=True).encode())

    def abandon(self) -> None:
        """Stop without writing an index (the block raised); shards on disk stay for ``--resume``."""
        self.cancel_future_jobs()

    def __exit__(self, exc_type, exc, tb) -> None:  # type: ignore[override]
        if exc_type is None:
            self.close()
        else:
            self.abandon()
