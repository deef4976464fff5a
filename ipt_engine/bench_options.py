"""The benchmark harness's options, defined once for ``python -m benchmarks`` and ``ipt bench``.

Standard library only: ``ipt --help`` builds every subcommand's parser, and the harness itself (with
its torch imports) lives in the source checkout's ``benchmarks/`` package.
"""

from __future__ import annotations

import argparse
from pathlib import Path

SUITE_NAMES = ("attention", "train", "loader", "convert", "templify", "synth")


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suites", nargs="*", metavar="SUITE",
                        help=f"suites to run (default: all that can run here): {', '.join(SUITE_NAMES)}")
    parser.add_argument("--quick", action="store_true", help="each suite's smoke mode (all CPU suites in ~3 min)")
    parser.add_argument("--profile", type=Path, metavar="DIR", default=None,
                        help="write torch.profiler traces + top-15 tables (attention, train, loader, synth) under DIR")
    parser.add_argument("--out", type=Path, metavar="DIR", default=None,
                        help="results directory (default benchmarks/results); SUMMARY.md is written there")
    parser.add_argument("--summary", action="store_true", help="only regenerate SUMMARY.md, run nothing")
