"""Composer callbacks from the ``callbacks`` section: throughput/MFU, learning rate, memory, ETA, and
a per-rank log of the samples each batch held.

SpeedMonitor reads ``tokens`` from the batch's real (non-padding) token count (see
:func:`ipt_engine.train.main.real_tokens`) and MFU from the model's ``flops_per_batch``; on a known GPU
it finds the peak FLOP/s itself.
"""

from __future__ import annotations

import logging
from typing import Any

from ipt_engine.train.config import CallbacksConfig

log = logging.getLogger(__name__)


def build_callbacks(cfg: CallbacksConfig, *, on_gpu: bool) -> list[Any]:
    from composer.callbacks import LRMonitor, MemoryMonitor, RuntimeEstimator, SpeedMonitor

    callbacks: list[Any] = []
    if cfg.speed_monitor is not None:
        callbacks.append(SpeedMonitor(window_size=cfg.speed_monitor.window_size))
    if cfg.lr_monitor is not None:
        callbacks.append(LRMonitor(**cfg.lr_monitor))
    if cfg.memory_monitor is not None:
        if on_gpu:
            callbacks.append(MemoryMonitor(**cfg.memory_monitor))
        else:
            log.info("memory_monitor: CUDA memory only; skipped on CPU")
    if cfg.runtime_estimator is not None:
        callbacks.append(RuntimeEstimator(**cfg.runtime_estimator))
    if cfg.batch_log is not None:
        callbacks.append(batch_log_callback(cfg.batch_log.folder))
    return callbacks


def row_digests(input_ids: Any, doc_lens: Any) -> list[str]:
    """Each row's real tokens (the first ``doc_lens.sum()`` ids) as a BLAKE2b-64 hex digest of int32s."""
    import hashlib

    import numpy as np

    out = []
    for ids, lens in zip(input_ids.cpu().numpy(), doc_lens.cpu().numpy()):
        real = np.ascontiguousarray(ids[: int(lens.sum())], dtype=np.int32)
        out.append(hashlib.blake2b(real.tobytes(), digest_size=8).hexdigest())
    return out


def batch_log_callback(folder: str) -> Any:
    """A Composer callback appending ``{"step", "rows"}`` per batch to ``folder/batches-rank{R}.jsonl``:
    with it, which rank saw which sample (and whether a resumed run saw the same) is a file comparison."""
    import json
    from pathlib import Path

    from composer import Callback
    from composer.utils import dist

    class BatchLog(Callback):
        def __init__(self) -> None:
            self.file: Any = None

        def after_dataloader(self, state: Any, logger: Any) -> None:
            if self.file is None:
                path = Path(folder) / f"batches-rank{dist.get_global_rank()}.jsonl"
                path.parent.mkdir(parents=True, exist_ok=True)
                self.file = open(path, "a", encoding="utf-8")  # held for the run, closed in close()
            rows = row_digests(state.batch["input_ids"], state.batch["doc_lens"])
            # Flushed per batch: a killed run's log ends at its last batch, as its checkpoints do.
            self.file.write(json.dumps({"step": int(state.timestamp.batch), "rows": rows}) + "\n")
            self.file.flush()

        def close(self, state: Any, logger: Any) -> None:
            if self.file is not None:
                self.file.close()
                self.file = None

    return BatchLog()
