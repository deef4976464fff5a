"""A crash-safe, resumable writer of MDS shard directories.

What the stock ``StreamingDataset`` reads is fixed by the MDS format (:mod:`ipt_engine.data.mds_format`
encodes it byte for byte as Streaming's ``MDSWriter`` does). The stock writer itself does not fit a
long stage that must survive a crash: it writes shard files in place, writes ``index.json`` from
``__exit__`` even when the block raised (indexing partial data), refuses or deletes a non-empty
directory, and importing it costs several seconds. This writer differs in exactly these ways:

1. every shard file is written atomically (temporary file, fsync, rename);
2. after each shard is on disk, ``on_shard(shards, resume_point, stats)`` is called so the caller can
   commit a checkpoint that lists exactly the shards written so far and where to restart;
3. it can be reopened on such a checkpoint (``resume_shards``), continuing the shard numbering, and the
   index is written (atomically) only by :meth:`close` on success — never on an exception.

Shards are cut exactly where the stock writer cuts them (a sample that would push the shard past
``size_limit`` starts a new one), so the same samples give the same files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ipt_engine.data.mds_format import MDSShardEncoder, compress
from ipt_engine.io.atomic import atomic_write_bytes

ShardCallback = Callable[[list[dict[str, Any]], Any, dict[str, int]], None]


class ResumableMDSWriter:
    def __init__(
        self,
        *,
        out: str | os.PathLike[str],
        columns: dict[str, str],
        compression: str | None,
        size_limit: int | None,
        on_shard: ShardCallback,
        resume_shards: list[dict[str, Any]] | None = None,
        resume_stats: dict[str, int] | None = None,
    ) -> None:
        self.local = Path(out)
        self.local.mkdir(parents=True, exist_ok=True)
        self.encoder = MDSShardEncoder(columns, compression, size_limit)
        self.shards: list[dict[str, Any]] = list(resume_shards or [])
        self.flushed: dict[str, int] = dict(resume_stats or {})
        self._on_shard = on_shard
        self._next_resume: Any = None
        self._cached: dict[str, int] = {}
        self._reset_cache()

    def _reset_cache(self) -> None:
        self.new_samples: list[bytes] = []
        self.new_shard_size = self.encoder.extra_bytes_per_shard

    # -- writing ---------------------------------------------------------------------------------
    def write(self, sample: dict[str, Any]) -> None:
        """Encode ``sample``; flush the current shard first if the sample would overflow it."""
        data = self.encoder.encode_sample(sample)
        size = len(data) + self.encoder.extra_bytes_per_sample
        limit = self.encoder.size_limit
        if limit and self.new_samples and limit < self.new_shard_size + size:
            self.flush_shard()
        self.new_samples.append(data)
        self.new_shard_size += size

    def write_sample(self, sample: dict[str, Any], resume_point: Any, stats: dict[str, int]) -> None:
        """Write one sample; ``resume_point`` regenerates it and everything after it."""
        self._next_resume = resume_point
        self.write(sample)
        for k, v in stats.items():
            self._cached[k] = self._cached.get(k, 0) + v

    def flush_shard(self) -> None:
        """Write the cached samples as the next shard file, then report the checkpoint."""
        raw_name, zip_name = self.encoder.shard_names(len(self.shards))
        raw = self.encoder.encode_shard(self.new_samples)
        zipped = None
        if zip_name is not None:
            data = compress(self.encoder.compression, raw)  # type: ignore[arg-type]
            zipped = (zip_name, len(data))
            atomic_write_bytes(self.local / zip_name, data)
        else:
            atomic_write_bytes(self.local / raw_name, raw)
        self.shards.append(self.encoder.index_entry(len(self.new_samples), (raw_name, len(raw)), zipped))
        self._reset_cache()
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
        index = {"version": 2, "shards": self.shards}
        atomic_write_bytes(self.local / "index.json", json.dumps(index, sort_keys=True).encode())

    def abandon(self) -> None:
        """Stop without writing an index (the block raised); shards on disk stay for ``--resume``."""
        self._reset_cache()

    def __enter__(self) -> ResumableMDSWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()
