"""Tokenize text records and pack them into MosaicML Streaming (MDS) shards.

Reads JSONL (.jsonl, .jsonl.gz, .jsonl.zst), Parquet, plain-text files (one document each), directories
of those, and `datasets` save_to_disk directories. Writes `index.json` + `shard.NNNNN.mds.zstd` with
columns `tokens` and `doc_lens`, plus `ipt.json` (tokenizer fingerprint, N, packing) and
`manifest.json`. The output is identical for any --workers; --resume continues after a crash and yields
exactly the samples of an uninterrupted run.

With --ray ADDRESS (auto, ray://HOST:PORT, or local for a throwaway cluster on this machine) the
inputs are cut into ranges of about --range-bytes, each converted by a Ray task into its own partition
part-NNNNN/ under the output, and one root index.json is written over all of them; the output directory
must be on a filesystem every node of the cluster sees.

What decides the output (--tokenizer, --max-seq-len, --packing, --compression, --text-field, --shard-size,
--bfd-window) is the conversion config: set by those flags, --config FILE (YAML with the same keys,
underscored) and --set key=value; `--schema` lists each with its default, `--print-config` shows the
resolved one. --resume refuses a change in any of it.

example:
  ipt convert corpus.jsonl --output shards/ --tokenizer mistral-v1 --max-seq-len 4096 --packing bfd
  ipt convert corpus/ --output /shared/shards/ --packing bfd --ray auto
"""

from __future__ import annotations

import argparse
import os
from typing import Any

CONFIG_MODEL = "ipt_engine.data.convert_config:ConvertConfig"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="files or directories to read")
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="MDS output directory")
    # Config flags default to SUPPRESS: an absent flag leaves the value to --config or the model's default.
    config = argparse.SUPPRESS
    p.add_argument("--config", "-c", default=None, metavar="FILE", help="conversion config (YAML)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set max_seq_len=4096 (repeatable)")
    p.add_argument("--tokenizer", default=config,
                   help="HF tokenizer directory or hub id; 'mistral-v1' (default) is the synthesizer's own, built offline")
    p.add_argument("--max-seq-len", type=int, default=config, metavar="N", help="tokens per sample (default 2048)")
    p.add_argument("--packing", default=config, metavar="{concat,bfd}",
                   help="concat (default): join and cut every N tokens; bfd: best-fit decreasing, never splits a document ≤ N")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="tokenizer worker processes (0 = in this process)")
    p.add_argument("--compression", default=config, help="shard compression (a Streaming codec, or 'none'; default zstd)")
    p.add_argument("--on-error", choices=("fail", "skip"), default="fail",
                   help="bad records: stop with one clear line, or skip them into DIR/rejects.jsonl")
    p.add_argument("--text-field", default=config,
                   help="field holding the text in JSONL/Parquet/datasets records (default 'text')")
    p.add_argument("--shard-size", type=int, default=config, metavar="BYTES",
                   help="uncompressed bytes per shard (default 64 MiB)")
    p.add_argument("--bfd-window", type=int, default=config, metavar="SAMPLES",
                   help="bfd: documents are packed in windows of this many samples' worth of tokens (default 1024)")
    p.add_argument("--resume", action="store_true", help="continue a partial output (starts fresh if none)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--split", metavar="NAME=FRACTION", default=None,
                   help="hold out this fraction of the documents by the hash of their text (e.g. holdout=0.01) "
                        "into a second output, OUT-NAME beside OUT; the same text is always on the same side")
    p.add_argument("--split-output", metavar="DIR", default=None, help="--split: the held-out output (default OUT-NAME)")
    ray = p.add_argument_group("Ray cluster")
    ray.add_argument("--ray", metavar="ADDRESS", default=None,
                     help="convert as Ray tasks: auto (running cluster), ray://HOST:PORT, HOST:PORT, or local")
    ray.add_argument("--range-bytes", type=int, default=64 << 20, metavar="BYTES",
                     help="--ray: input bytes per task; large files are split, small ones grouped")
    ray.add_argument("--max-range-retries", type=int, default=2, metavar="N",
                     help="--ray: re-runs of a range whose worker died before the run fails")


def resolve_config(args: argparse.Namespace) -> Any:
    """The conversion config from --config, the flags and --set (``--print-config``, ``run``)."""
    from ipt_engine.configuration import load
    from ipt_engine.data.convert_config import FLAGS, ConvertConfig

    flags = {key: (flag, getattr(args, key)) for key, flag in FLAGS.items() if hasattr(args, key)}
    return load(ConvertConfig, args.config, args.overrides, flags=flags)


def run(args: argparse.Namespace) -> int:
    from ipt_engine.data.convert import ConvertOptions
    from ipt_engine.data.split import split_sides

    opts = ConvertOptions.from_config(
        resolve_config(args), inputs=args.inputs, output=args.output, workers=args.workers,
        on_error=args.on_error, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress,
    )
    for side in split_sides(opts, getattr(args, "split", None), args.split_output):
        if args.ray is not None:
            from ipt_engine.data.convert_ray import RayConvertOptions, convert_on_ray

            res = convert_on_ray(side, RayConvertOptions(
                address=args.ray, range_bytes=args.range_bytes, max_retries=args.max_range_retries))
        else:
            from ipt_engine.data.convert import convert

            res = convert(side)
        print_result(res)
    return 0


def print_result(res: Any) -> None:
    """The end-of-run summary of one conversion (a :class:`~ipt_engine.data.convert.ConvertResult`)."""
    from ipt_engine.summary import human, print_summary

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
        *([("ranges", s["ranges"])] if "ranges" in s else []),
        ("time", f"{res.seconds:.1f}s"),
    ])
