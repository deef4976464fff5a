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
    # The options are defined here (standard library only) so `ipt --help` stays instant; they mirror
    # benchmarks.__main__.build_parser, which `ipt bench` hands the parsed namespace to.
    parser.add_argument("suites", nargs="*", metavar="SUITE",
                        help="attention, train, loader, convert, templify, synth (default: all that can run here)")
    parser.add_argument("--quick", action="store_true", help="each suite's smoke mode")
    parser.add_argument("--profile", type=Path, metavar="DIR", default=None,
                        help="write torch.profiler traces and top-15 tables under DIR")
    parser.add_argument("--out", type=Path, metavar="DIR", default=None,
                        help="results directory (default benchmarks/results)")
    parser.add_argument("--summary", action="store_true", help="only regenerate SUMMARY.md")


def run(args: argparse.Namespace) -> int:
    harness = _harness()
    unknown = [s for s in args.suites if s not in harness.SUITES]
    if unknown:
        raise UserError(f"unknown suite(s) {', '.join(unknown)}; choose from {', '.join(harness.SUITES)}")
    return harness.run(args)
