"""Where metrics go: Composer's console logger, a JSONL file, and the usual third-party loggers.

The JSONL file is ours: one line per logging call, appended (a resumed run continues the same file), so
a run's curve can be read back without a tracking server; the resumption test reads its losses from it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ipt_engine.train.config import LoggersConfig


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1:
        return value.item()
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)


def _jsonl_logger_class() -> type:
    from composer.loggers import LoggerDestination
    from composer.utils import dist

    class JsonlLogger(LoggerDestination):
        """Append ``{"step": N, "<metric>": value, ...}`` lines to a file (global rank 0 only)."""

        def __init__(self, path: str):
            super().__init__()
            self.path = Path(path)

        def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
            if dist.get_global_rank() != 0:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            line = json.dumps({"step": step, **{k: _plain(v) for k, v in metrics.items()}})
            with self.path.open("a") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())

    return JsonlLogger


def build_loggers(cfg: LoggersConfig, run_name: str | None) -> list[Any]:
    loggers: list[Any] = []
    if cfg.jsonl is not None:
        path = cfg.jsonl.path.replace("{run_name}", run_name or "run")
        loggers.append(_jsonl_logger_class()(path))
    if cfg.wandb is not None:
        from composer.loggers import WandBLogger

        loggers.append(WandBLogger(**cfg.wandb))
    if cfg.mlflow is not None:
        from composer.loggers import MLFlowLogger

        loggers.append(MLFlowLogger(**cfg.mlflow))
    if cfg.tensorboard is not None:
        from composer.loggers import TensorboardLogger

        loggers.append(TensorboardLogger(**cfg.tensorboard))
    return loggers
