"""Benchmark ``ipt convert`` against a single-process baseline on the same single JSONL file.

Baseline (what llm-foundry's ``convert_dataset_json`` does, in this process): read the file line by
line, call the Hugging Face tokenizer once per document, concatenate BOS + ids + EOS into a buffer, cut
N-token samples, and write them with the stock ``MDSWriter`` (zstd, ``tokens`` as ndarray:int32).
Ours: ``convert()`` with 1 and 2 tokenizer workers, concat packing, same tokenizer, N and compression.
Both produce the same token stream (checked before timing). Reported: tokens/s, median of repeats.

    python -m benchmarks.convert [--copies 8] [--repeats 3] [--max-seq-len 2048]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import case, median_time, write_results


def baseline_convert(src: Path, out: Path, tokenizer, n: int) -> int:
    from streaming import MDSWriter

    bos, eos = [tokenizer.bos_token_id], [tokenizer.eos_token_id]
    buffer: list[int] = []
    total = 0
    with MDSWriter(out=str(out), columns={"tokens": "ndarray:int32"}, compression="zstd") as w:
        with open(src, encoding="utf-8") as f:
            for line in f:
                ids = tokenizer(json.loads(line)["text"], add_special_tokens=False)["input_ids"]
                buffer += bos + ids + eos
                total += len(ids) + 2
                while len(buffer) >= n:
                    w.write({"tokens": np.asarray(buffer[:n], dtype=np.int32)})
                    buffer = buffer[n:]
        if buffer:
            w.write({"tokens": np.asarray(buffer, dtype=np.int32)})
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=8, help="copies of the default corpus in the input file")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-seq-len", type=int, default=2048)
    ap.add_argument("--out-dir", default=None, help="results directory (default benchmarks/results)")
    args = ap.parse_args()
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the baseline is one process, one thread

    from ipt_engine.corpus import iter_stdlib_documents
    from ipt_engine.data.convert import ConvertOptions, convert
    from ipt_engine.data.shards import iter_samples
    from ipt_engine.data.tokenizer_info import load_tokenizer

    tok = load_tokenizer("mistral-v1")
    work = Path(tempfile.mkdtemp(prefix="ipt-bench-convert-"))
    try:
        docs = list(iter_stdlib_documents())
        src = work / "corpus.jsonl"
        with open(src, "w", encoding="utf-8") as f:
            for _ in range(args.copies):
                for d in docs:
                    f.write(json.dumps({"text": d["text"]}, ensure_ascii=False) + "\n")
        n = args.max_seq_len

        def run_baseline() -> int:
            out = work / "base"
            shutil.rmtree(out, ignore_errors=True)
            return baseline_convert(src, out, tok, n)

        def run_ours(workers: int):
            def go() -> None:
                out = work / f"ours{workers}"
                convert(ConvertOptions(inputs=[str(src)], output=str(out), max_seq_len=n, packing="concat",
                                       workers=workers, overwrite=True, progress=False))
            return go

        total = run_baseline()
        go = run_ours(2)
        go()
        ours_tokens = [t for s in iter_samples(work / "ours2") for t in s["tokens"].tolist()]
        base_tokens = [t for s in iter_samples(work / "base") for t in s["tokens"].tolist()]
        assert ours_tokens == base_tokens, "baseline and ours must write the same token stream"

        t_base, s_base = median_time(run_baseline, repeats=args.repeats, warmup=0)
        cases = []
        base_tps = total / t_base
        print(f"baseline (1 process, HF tokenizer per document, MDSWriter): {base_tps / 1e3:.0f}k tokens/s")
        for workers in (1, 2):
            t, s = median_time(run_ours(workers), repeats=args.repeats, warmup=0)
            tps = total / t
            print(f"ipt convert --workers {workers}: {tps / 1e3:.0f}k tokens/s  ({tps / base_tps:.2f}x)")
            cases.append(case(f"convert-workers{workers}", {"workers": workers, "max_seq_len": n, "tokens": total,
                                                             "input_mb": round(src.stat().st_size / 1e6, 1)},
                              "tokens/s", base_tps, tps, baseline_samples_s=s_base, ours_samples_s=s))
        path = write_results("convert", cases, out_dir=args.out_dir, extra={
            "notes": "Baseline = llm-foundry-style single-process loop in this process. llm-foundry itself "
                     "is not installed in a separate environment here, so its own converter is not timed.",
        })
        print(f"results: {path}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
