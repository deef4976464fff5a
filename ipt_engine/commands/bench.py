"""Run the benchmark suites (baseline and ours side by side) and regenerate benchmarks/results/SUMMARY.md.

Same options as `python -m benchmarks`; runs from a source checkout, where the benchmarks/ directory
lives. With no SUITE every suite that can run on this machine runs; CUDA-only suites are skipped with
one line saying why. --summary only regenerates the table from the results files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ipt_engine.errors import UserError

_ROOT = Path(__file__).resolve().parent.parent.parent


def _harness():
    if not (_ROOT / "benchmarks" / "__main__.py").is_file():
        raise UserError(f"{_ROOT}: no benchmarks/ directory; `ipt bench` runs from a source checkout")
    if str(_ROOT) not in sys.path:
        sys.path.insert(0, str(_ROOT))
    import benchmarks.__main__ as harness

    return harness


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ipt_engine.bench_options import add_bench_arguments

    add_bench_arguments(parser)


def run(args: argparse.Namespace) -> int:
    harness = _harness()
    unknown = [s for s in args.suites if s not in harness.SUITES]
    if unknown:
        raise UserError(f"unknown suite(s) {', '.join(unknown)}; choose from {', '.join(harness.SUITES)}")
    return harness.run(args)
