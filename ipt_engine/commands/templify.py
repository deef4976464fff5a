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
import functools
import hashlib
from typing import Any


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


def collection_seed(seed: int, source_number: int, line: int) -> int:
    """A 64-bit seed from the run's seed and the collection's position; stable across processes."""
    digest = hashlib.blake2b(f"{seed}:{source_number}:{line}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def validate_record(record: Any) -> str | None:
    from ipt_engine.templify import collection_error

    return collection_error(record.value)


def process_part(
    seed: int, source_numbers: dict[str, int], index: int, records: list[Any]
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Templify one part; top level (and bound with functools.partial) so worker processes can run it."""
    from ipt_engine.templify import templify_valid

    rows: list[dict[str, Any]] = []
    pairs = entries = 0
    for rec in records:
        collection = rec.value
        entries += len(collection)
        pairs += sum(len(e["QA_list"]) for e in collection)
        s = collection_seed(seed, source_numbers[rec.source], rec.index)
        rows.extend({"text": t} for t in templify_valid(collection, s))
    stats: dict[str, float] = {"collections": len(records), "entries": entries, "pairs": pairs, "texts": len(rows)}
    return rows, stats


def run(args: argparse.Namespace) -> int:
    from ipt_engine.errors import UserError
    from ipt_engine.io.discover import expand_inputs
    from ipt_engine.io.parts import run_part_stage
    from ipt_engine.summary import human, print_summary

    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    sources = expand_inputs(args.inputs)
    numbers = {str(s): i for i, s in enumerate(sources)}
    result = run_part_stage(
        stage="templify",
        sources=sources,
        output=args.output,
        params={"seed": args.seed},
        process=functools.partial(process_part, args.seed, numbers),
        part_size=args.part_size,
        resume=args.resume,
        overwrite=args.overwrite,
        on_error=args.on_error,
        mode="json",
        workers=args.workers,
        progress_unit="coll",
        reject_payload=None,
        validate=validate_record,
    )
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
