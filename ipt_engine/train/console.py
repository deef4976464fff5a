"""What ``ipt train`` prints: one short line every ``console_log_interval`` instead of metric dicts.

Composer's own console logger prints every metric of every logging call (a dozen ``time/*`` and
``throughput/*`` keys per batch), which buries the loss. This logger keeps what a person watches — step,
loss, learning rate, tokens/s, MFU where known, and each evaluator's loss and perplexity — one line
each, written through ``tqdm.write`` so that it does not tear a progress bar. ``loggers.console: full``
(``ipt train --verbose``) brings back Composer's logger unchanged.
"""

from __future__ import annotations

import sys
from typing import Any

#: Metric keys shown in a training line, in order, with their label and format.
TRAIN_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("loss/train/total", "loss", "{:.4f}"),
    ("lr-DecoupledAdamW/group0", "lr", "{:.2e}"),
    ("lr-AdamW/group0", "lr", "{:.2e}"),
    ("throughput/device/tokens_per_sec", "tok/s/device", "{:,.0f}"),
    ("throughput/tokens_per_sec", "tok/s", "{:,.0f}"),
    ("throughput/device/mfu", "mfu", "{:.1%}"),
)


def format_train_line(batch: int, max_batches: int | None, metrics: dict[str, float]) -> str:
    """``[batch 10/30] loss 5.2314  lr 2.90e-03  tok/s 12,345``: only the fields that were logged."""
    where = f"{batch}/{max_batches}" if max_batches else str(batch)
    parts = [f"[batch {where}]"]
    seen: set[str] = set()
    for key, label, fmt in TRAIN_FIELDS:
        if key in metrics and label not in seen:
            parts.append(f"{label} {fmt.format(float(metrics[key]))}")
            seen.add(label)
    return "  ".join(parts)


def format_eval_line(batch: int, metrics: dict[str, float]) -> str:
    """``[eval @ batch 10] raw: loss 5.1234 ppl 168.1  augmented: ...`` from Composer's eval metric keys."""
    streams: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        # metrics/<evaluator label>/<MetricName>
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == "metrics":
            streams.setdefault(parts[1], {})[parts[2]] = float(value)
    chunks = []
    for label, vals in sorted(streams.items()):
        items = []
        if "LanguageCrossEntropy" in vals:
            items.append(f"loss {vals['LanguageCrossEntropy']:.4f}")
        if "LanguagePerplexity" in vals:
            items.append(f"ppl {vals['LanguagePerplexity']:.1f}")
        items.extend(f"{k} {v:.4g}" for k, v in sorted(vals.items())
                     if k not in ("LanguageCrossEntropy", "LanguagePerplexity"))
        chunks.append(f"{label}: {' '.join(items)}")
    return f"[eval @ batch {batch}] " + "  ".join(chunks)


def _write(line: str) -> None:
    try:
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)
    except ImportError:  # pragma: no cover - tqdm is a core dependency
        print(line, file=sys.stderr, flush=True)


def build_compact_console_logger(log_interval: str) -> Any:
    """A Composer ``LoggerDestination`` printing :func:`format_train_line` every ``log_interval`` batches
    (or epochs) on global rank 0, and :func:`format_eval_line` after every evaluation."""
    from composer.core import Time, TimeUnit
    from composer.loggers import LoggerDestination
    from composer.utils import dist

    interval = Time.from_input(log_interval, TimeUnit.EPOCH)
    if interval.unit not in (TimeUnit.EPOCH, TimeUnit.BATCH):
        from ipt_engine.errors import UserError

        raise UserError(f"loggers.console_log_interval: must be in batches or epochs (10ba, 1ep), got {log_interval}")

    class CompactConsoleLogger(LoggerDestination):
        def __init__(self) -> None:
            super().__init__()
            self.train: dict[str, float] = {}
            self.eval: dict[str, float] = {}
            self.in_eval = False
            self.last_line_batch = -1

        def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
            target = self.eval if self.in_eval else self.train
            for key, value in metrics.items():
                try:
                    target[key] = float(value.item() if hasattr(value, "item") else value)
                except (TypeError, ValueError):
                    continue

        def _line(self, state: Any) -> None:
            batch = int(state.timestamp.batch)
            if dist.get_global_rank() == 0 and self.train and batch != self.last_line_batch:
                limit = state.max_duration
                total = int(limit.value) if limit is not None and limit.unit == TimeUnit.BATCH else None
                _write(format_train_line(batch, total, self.train))
                self.last_line_batch = batch
            self.train = {}

        def batch_end(self, state: Any, logger: Any) -> None:
            if interval.unit == TimeUnit.BATCH and int(state.timestamp.batch) % int(interval.value) == 0:
                self._line(state)

        def epoch_end(self, state: Any, logger: Any) -> None:
            if interval.unit == TimeUnit.EPOCH and int(state.timestamp.epoch) % int(interval.value) == 0:
                self._line(state)

        def fit_end(self, state: Any, logger: Any) -> None:
            self._line(state)

        def eval_start(self, state: Any, logger: Any) -> None:
            self.in_eval, self.eval = True, {}

        def eval_end(self, state: Any, logger: Any) -> None:
            self.in_eval = False
            if dist.get_global_rank() == 0 and self.eval:
                _write(format_eval_line(int(state.timestamp.batch), self.eval))

    return CompactConsoleLogger()
