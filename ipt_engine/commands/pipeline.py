"""Run the pipeline end to end on the embedded default corpus (Python standard-library documentation,
present on every machine): write the corpus, convert it into packed MDS shards with the instruction
synthesizer's own Mistral tokenizer, and print the `ipt inspect` summary. Every step resumes: a rerun
skips what is complete.

example:
  ipt pipeline --workdir out/demo --max-seq-len 2048 --packing bfd
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default="out/demo", help="where every stage writes its output")
    p.add_argument("--max-seq-len", type=int, default=2048, help="tokens per packed sample")
    p.add_argument("--packing", choices=("concat", "bfd"), default="bfd", help="packing policy")
    p.add_argument("--workers", type=int, default=2, help="tokenizer worker processes")
    p.add_argument("--limit", type=int, default=None, help="use only the first N documents of the corpus")
    p.add_argument("--plot", action="store_true", help="also draw the document-length histogram")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ipt_engine.corpus import write_default_corpus
    from ipt_engine.data.convert import ConvertOptions, convert
    from ipt_engine.data.inspect import inspect_shards, plot_histogram, print_report

    work = Path(args.workdir)
    corpus = work / "corpus" / "raw.jsonl"
    if not corpus.exists():
        _, n = write_default_corpus(corpus, limit=args.limit)
        print(f"[1/2] default corpus: {n} standard-library modules' documentation -> {corpus}")
    else:
        print(f"[1/2] default corpus: reusing {corpus}")
    shards = work / "shards" / "raw"
    print(f"[2/2] convert -> {shards}")
    res = convert(ConvertOptions(inputs=[str(corpus)], output=str(shards), tokenizer="mistral-v1",
                                 max_seq_len=args.max_seq_len, packing=args.packing, workers=args.workers,
                                 resume=True))
    if res.already_complete:
        print(f"      {shards} is complete; nothing to redo")
    report = inspect_shards(shards)
    print()
    print_report(report)
    if args.plot:
        png = work / "raw-doc-lengths.png"
        plot_histogram(report, png)
        print(f"histogram: {png}")
    return 0
