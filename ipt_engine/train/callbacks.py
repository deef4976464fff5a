"""Composer callbacks from the ``callbacks`` section: throughput/MFU, learning rate, memory, ETA.

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
    return callbacks
