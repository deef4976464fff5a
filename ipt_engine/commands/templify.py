"""Render read collections into instruction-augmented pre-training texts.

Reads read collections (one JSON list of entries per line: the output of `ipt synthesize`, or the
released instruction-pretrain/*-instruction-augmented-corpora jsonl) and writes
part-NNNNN.jsonl.zst files with one {"text": ...} per line, plus manifest.json. Each run of entries
joined by inherit_from_prev becomes one few-shot text; entries without pairs pass through as raw text.
The template choices of a collection are seeded from --seed and the collection's position (input
file and line), so the output does not depend on --workers or --part-size. --resume after an
interruption continues where the last committed part ended.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="read-collection files or directories")
    parser.add_argument("--output", "-o", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="seed of the template choices")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--part-size", type=int, default=10_000, help="read collections per output part")
    parser.add_argument("--resume", action="store_true", help="continue a partial output (fresh if none)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument(
        "--on-error", choices=("fail", "skip"), default="fail",
        help="on a malformed line: stop with its file:line, or skip it into rejects.jsonl",
    )


def run(args: argparse.Namespace) -> int:
    from ipt_engine.summary import human, print_summary
    from ipt_engine.templify.stage import run_templify

    result = run_templify(args.inputs, args.output, seed=args.seed, workers=args.workers,
                          part_size=args.part_size, resume=args.resume, overwrite=args.overwrite,
                          on_error=args.on_error)
    stats = result.stats
    if result.already_complete:
        print(f"ipt templify: {args.output} is already complete; nothing to do")
    rate = result.rows / result.seconds if result.seconds > 0 else 0.0
    print_summary(
        "templify",
        [
            ("collections", human(int(stats.get("collections", 0)))),
            ("entries", human(int(stats.get("entries", 0)))),
            ("pairs", human(int(stats.get("pairs", 0)))),
            ("texts", human(int(stats.get("texts", 0)))),
            ("texts/s", f"{rate:,.0f}" + ("" if result.seconds else " (nothing new)")),
            ("rejects", human(int(stats.get("rejects", 0)))),
            ("output", args.output),
        ],
    )
    return 0
