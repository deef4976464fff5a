"""Summarize MDS shards written by `ipt convert`: shards, samples, tokens, documents, fill rate, and a
histogram of document-piece lengths; optionally plot it or print decoded samples.

example:
  ipt inspect shards/ --plot lengths.png --decode 2
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("directory", metavar="DIR", help="MDS directory written by `ipt convert`")
    p.add_argument("--plot", metavar="FILE.png", help="draw the document-length histogram to a PNG")
    p.add_argument("--decode", type=int, default=0, metavar="K", help="print the first K samples decoded")
    p.add_argument("--tokenizer", help="tokenizer for --decode (default: the one recorded in ipt.json)")


def run(args: argparse.Namespace) -> int:
    from ipt_engine.data.inspect import inspect_shards, plot_histogram, print_report

    report = inspect_shards(args.directory, decode=args.decode, tokenizer=args.tokenizer)
    print_report(report)
    if args.plot:
        plot_histogram(report, Path(args.plot))
        print(f"histogram written to {args.plot}")
    return 0
