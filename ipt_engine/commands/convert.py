"""Tokenize text records and pack them into MosaicML Streaming (MDS) shards.

Reads JSONL (.jsonl, .jsonl.gz, .jsonl.zst), Parquet, plain-text files (one document each), directories
of those, and `datasets` save_to_disk directories. Writes `index.json` + `shard.NNNNN.mds.zstd` with
columns `tokens` and `doc_lens`, plus `ipt.json` (tokenizer fingerprint, N, packing) and
`manifest.json`. The output is identical for any --workers; --resume continues after a crash and yields
exactly the samples of an uninterrupted run.

example:
  ipt convert corpus.jsonl --output shards/ --tokenizer mistral-v1 --max-seq-len 4096 --packing bfd
"""

from __future__ import annotations

import argparse
import os


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="files or directories to read")
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="MDS output directory")
    p.add_argument("--tokenizer", default="mistral-v1",
                   help="HF tokenizer directory or hub id; 'mistral-v1' is the synthesizer's own, built offline")
    p.add_argument("--max-seq-len", type=int, default=2048, metavar="N", help="tokens per sample")
    p.add_argument("--packing", choices=("concat", "bfd"), default="concat",
                   help="concat: join and cut every N tokens; bfd: best-fit decreasing, never splits a document ≤ N")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="tokenizer worker processes (0 = in this process)")
    p.add_argument("--compression", default="zstd", help="shard compression (a Streaming codec, or 'none')")
    p.add_argument("--on-error", choices=("fail", "skip"), default="fail",
                   help="bad records: stop with one clear line, or skip them into DIR/rejects.jsonl")
    p.add_argument("--text-field", default="text", help="field holding the text in JSONL/Parquet/datasets records")
    p.add_argument("--shard-size", type=int, default=1 << 26, metavar="BYTES", help="uncompressed bytes per shard")
    p.add_argument("--bfd-window", type=int, default=1024, metavar="SAMPLES",
                   help="bfd: documents are packed in windows of this many samples' worth of tokens")
    p.add_argument("--resume", action="store_true", help="continue a partial output (starts fresh if none)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ipt_engine.data.convert import ConvertOptions, convert
    from ipt_engine.summary import human, print_summary

    opts = ConvertOptions(
        inputs=args.inputs, output=args.output, tokenizer=args.tokenizer, max_seq_len=args.max_seq_len,
        packing=args.packing, workers=args.workers,
        compression=None if args.compression.lower() in ("", "none") else args.compression,
        on_error=args.on_error, resume=args.resume, overwrite=args.overwrite, text_field=args.text_field,
        shard_size=args.shard_size, bfd_window=args.bfd_window, progress=not args.no_progress,
    )
    res = convert(opts)
    s = res.stats
    if res.already_complete:
        print(f"{res.output}: already complete (nothing to do)")
    fresh = s.get("tokenized_tokens_this_run", 0)
    print_summary(f"ipt convert -> {res.output}", [
        ("documents", human(s.get("documents", 0))),
        ("tokens", human(s.get("tokens", 0))),
        ("samples", human(s.get("samples", 0))),
        ("fill rate", f"{100 * res.fill_rate:.2f}%"),
        ("tokens/s", human(fresh / res.seconds) if res.seconds else "-"),
        ("rejects", s.get("rejects", 0)),
        ("time", f"{res.seconds:.1f}s"),
    ])
    return 0
