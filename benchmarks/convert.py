"""Benchmark ``ipt convert`` against what a user writes without it, as whole processes.

Baseline (``--baseline-process``; what one writes with the Hugging Face fast tokenizer and Streaming's
stock writer): read the JSONL file, batch-encode 1,000 texts per call with the same fast tokenizer
(``tokenizer(batch)`` — the Rust backend already spreads a batch over ~1.15 cores), concatenate
BOS + ids + EOS into one stream, cut N-token samples and write them with ``MDSWriter`` (zstd,
``tokens`` as ndarray:int32). Ours: ``ipt convert --workers 2`` (concat packing, same tokenizer, N and
compression, plus the ``doc_lens`` column the baseline does not write). Both are timed as whole
processes from launch to exit — interpreter start-up and imports included, since that is what a user
waits for — on the same ~13 MB corpus (8 copies of the embedded default corpus). Both write the same
token stream (checked before timing). Repeats alternate baseline and ours (odd repeats ours first),
because the machine is shared; the medians and min–max of the repeats are reported.

    python -m benchmarks.convert [--quick] [--copies 8] [--repeats 5] [--max-seq-len 2048]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import case, spread, write_results

BATCH = 1000  # texts per tokenizer call in the baseline


def baseline_convert(src: Path, out: Path, n: int, tokenizer_name: str = "mistral-v1") -> int:
    """The user's own converter: batched fast-tokenizer encoding into the stock MDSWriter (concat)."""
    import numpy as np
    from streaming import MDSWriter

    from ipt_engine.data.tokenizer_info import load_tokenizer

    tok = load_tokenizer(tokenizer_name)
    bos, eos = tok.bos_token_id, tok.eos_token_id
    buffer = np.empty(0, dtype=np.int32)
    total = 0

    def encode(texts: list[str]) -> np.ndarray:
        ids = tok(texts, add_special_tokens=False)["input_ids"]
        flat: list[int] = []
        for x in ids:
            flat.append(bos)
            flat.extend(x)
            flat.append(eos)
        return np.asarray(flat, dtype=np.int32)

    with MDSWriter(out=str(out), columns={"tokens": "ndarray:int32"}, compression="zstd") as w:
        batch: list[str] = []
        with open(src, encoding="utf-8") as f:
            for line in f:
                batch.append(json.loads(line)["text"])
                if len(batch) == BATCH:
                    buffer = np.concatenate([buffer, encode(batch)])
                    batch = []
                    cut = len(buffer) // n * n
                    for i in range(0, cut, n):
                        w.write({"tokens": buffer[i:i + n]})
                    total += cut
                    buffer = buffer[cut:]
        if batch:
            buffer = np.concatenate([buffer, encode(batch)])
        for i in range(0, len(buffer), n):
            w.write({"tokens": buffer[i:i + n]})
        total += len(buffer)
    return total


def write_corpus(path: Path, copies: int) -> int:
    from ipt_engine.corpus import iter_stdlib_documents

    docs = [d["text"] for d in iter_stdlib_documents()]
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(copies):
            for d in docs:
                f.write(json.dumps({"text": d}, ensure_ascii=False) + "\n")
    return len(docs) * copies


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["TOKENIZERS_PARALLELISM"] = "true"  # the baseline as users run it: Rust threads on
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def baseline_command(src: Path, out: Path, n: int) -> list[str]:
    return [sys.executable, "-m", "benchmarks.convert", "--baseline-process", str(src), str(out), str(n)]


def ours_command(src: Path, out: Path, n: int, workers: int) -> list[str]:
    return [sys.executable, "-m", "ipt_engine", "convert", str(src), "--output", str(out), "--max-seq-len", str(n),
            "--packing", "concat", "--workers", str(workers), "--no-progress", "--overwrite"]


def timed(cmd: list[str], out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=_env(), stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def token_stream(directory: Path) -> list[int]:
    from ipt_engine.data.shard_reader import iter_samples

    return [t for s in iter_samples(directory) for t in s["tokens"].tolist()]


def run(*, quick: bool = False, copies: int | None = None, repeats: int | None = None, max_seq_len: int = 2048,
        workers: tuple[int, ...] = (2,), out_dir: str | Path | None = None) -> Path:
    copies = copies or (1 if quick else 8)
    repeats = repeats or (1 if quick else 5)
    n = max_seq_len
    work = Path(tempfile.mkdtemp(prefix="ipt-bench-convert-"))
    try:
        src = work / "corpus.jsonl"
        docs = write_corpus(src, copies)
        base_out, ours_out = work / "base", work / "ours"
        subprocess.run(baseline_command(src, base_out, n), check=True, env=_env(), stdout=subprocess.DEVNULL)
        subprocess.run(ours_command(src, ours_out, n, workers[0]), check=True, env=_env(), stdout=subprocess.DEVNULL)
        base_tokens = token_stream(base_out)
        assert token_stream(ours_out) == base_tokens, "baseline and ours must write the same token stream"
        total = len(base_tokens)
        times: dict[str, list[float]] = {"baseline": [], **{f"ours{w}": [] for w in workers}}
        for r in range(repeats):
            order = ["baseline", *(f"ours{w}" for w in workers)]
            for name in order[::-1] if r % 2 else order:
                cmd = baseline_command(src, base_out, n) if name == "baseline" else \
                    ours_command(src, ours_out, n, int(name[4:]))
                times[name].append(timed(cmd, base_out if name == "baseline" else ours_out))
                print(f"repeat {r + 1} {name:9s} {times[name][-1]:6.2f} s  {total / times[name][-1] / 1e3:6.0f}k tok/s",
                      flush=True)
        base_rates = [total / t for t in times["baseline"]]
        cases = []
        for w in workers:
            rates = [total / t for t in times[f"ours{w}"]]
            c = case(f"convert --workers {w} vs batched HF tokenizer + MDSWriter",
                     {"workers": w, "max_seq_len": n, "tokens": total, "documents": docs, "batch": BATCH,
                      "input_mb": round(src.stat().st_size / 1e6, 1), "timing": "whole process"},
                     "tokens/s", spread(base_rates)["median"], spread(rates)["median"],
                     repeats=repeats, spread={"baseline": spread(base_rates)["range"], "ours": spread(rates)["range"]},
                     baseline_seconds=times["baseline"], ours_seconds=times[f"ours{w}"])
            print(f"{c['name']}: {c['ours'] / 1e3:.0f}k vs {c['baseline'] / 1e3:.0f}k tok/s -> {c['ratio']:.2f}x")
            cases.append(c)
        return write_results("convert", cases, out_dir=out_dir, extra={
            "baseline": f"fast tokenizer batch-encoding {BATCH} texts per call into streaming.MDSWriter (concat)",
            "notes": PROFILE_NOTE})
    finally:
        shutil.rmtree(work, ignore_errors=True)


PROFILE_NOTE = (
    "Baseline: the batched loop a user writes (fast tokenizer, 1,000 texts per call, Rust threads on, stock "
    "MDSWriter), timed as a whole process like ours (the earlier 2.09x was against one-document-at-a-time "
    "encoding in-process). Profile of `ipt convert --workers 2` on the 13 MB corpus before the change (cProfile, "
    "main process, 10.4 s): 7.1 s importing `streaming` (its package __init__ pulls in torch and transformers), "
    "2.3 s importing transformers for AutoTokenizer, 2.3 s waiting on the two tokenizer workers, the rest "
    "packing and writing; whole-process ratio 1.05x. Changed: MDS shards are encoded by ipt_engine.data.mds_format "
    "(byte-identical to the stock MDSWriter, tested) and the tokenizer is loaded from tokenizer.json with the "
    "Rust library alone, so `ipt convert` imports neither torch, transformers nor streaming (start-up 0.3 s "
    "instead of ~10 s); tokenizing, packing and writing are unchanged."
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one copy of the corpus, one repeat (smoke run)")
    ap.add_argument("--copies", type=int, default=None, help="copies of the default corpus in the input file")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--max-seq-len", type=int, default=2048)
    ap.add_argument("--workers", type=int, nargs="+", default=[2])
    ap.add_argument("--out-dir", "--out", dest="out_dir", default=None, help="results directory")
    ap.add_argument("--baseline-process", nargs=3, metavar=("SRC", "OUT", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.baseline_process:
        src, out, n = args.baseline_process
        baseline_convert(Path(src), Path(out), int(n))
        return 0
    print(run(quick=args.quick, copies=args.copies, repeats=args.repeats, max_seq_len=args.max_seq_len,
              workers=tuple(args.workers), out_dir=args.out_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
