"""The training input path against a bare ``StreamingDataset``, on the same shards.

Shards: ``ipt convert`` output (concatenation packing, so every row holds exactly 2,048 tokens as
torch's default collate requires; ``tokens`` + ``doc_lens``) of copies of the embedded default corpus,
in a temporary directory.

- baseline: the stock ``StreamingDataset`` over those shards and a ``DataLoader`` with torch's default
  collate over the ``tokens`` column — the least a user's loader does before a training step;
- ours: what ``ipt train`` builds (``ipt_engine.train.data.build_dataloader``: the dataset subclass
  that normalizes every sample to ``tokens`` + ``doc_lens``, and the packed collator producing
  ``input_ids``/``labels``/``position_ids``/``doc_lens``), plus the per-microbatch attention metadata
  the model's forward builds from ``doc_lens`` (``kernels.metadata.build_packed_metadata``).

Both read one epoch, unshuffled, batch 8 × 2,048, at ``num_workers`` 0 and 2; the clock starts at the
second batch (worker start-up is paid once per run, not per step). Repeats alternate which side goes
first. Reported: samples/s and tokens/s (median, min–max). ``--profile DIR`` writes a torch.profiler
trace of ours at ``num_workers`` 0 (where the loader's work runs in this process) and its top-ops table.

    python -m benchmarks.loader [--quick] [--copies 8] [--repeats 5] [--profile DIR] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import gc
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import case, spread, write_results

BATCH, SEQ = 8, 2048


def make_shards(work: Path, copies: int) -> Path:
    """Convert ``copies`` of the embedded corpus into MDS shards under ``work``; return the directory."""
    import json

    from ipt_engine.corpus import iter_stdlib_documents
    from ipt_engine.data.convert import ConvertOptions, convert

    src = work / "corpus.jsonl"
    docs = [d["text"] for d in iter_stdlib_documents()]
    with open(src, "w", encoding="utf-8") as f:
        for _ in range(copies):
            for d in docs:
                f.write(json.dumps({"text": d}, ensure_ascii=False) + "\n")
    out = work / "shards"
    convert(ConvertOptions(inputs=[str(src)], output=str(out), max_seq_len=SEQ, packing="concat", workers=0,
                           progress=False))
    return out


def _clean_shared_memory() -> None:
    from streaming.base.util import clean_stale_shared_memory

    gc.collect()
    clean_stale_shared_memory()


def baseline_loader(shards: Path, workers: int) -> Any:
    from streaming import StreamingDataset
    from torch.utils.data import DataLoader, default_collate

    ds = StreamingDataset(local=str(shards), batch_size=BATCH, shuffle=False)

    def collate(samples: list[dict[str, Any]]) -> Any:
        return default_collate([{"tokens": s["tokens"]} for s in samples])

    return DataLoader(ds, batch_size=BATCH, collate_fn=collate, num_workers=workers, drop_last=True,
                      prefetch_factor=2 if workers else None)


def ours_loader(shards: Path, workers: int) -> Any:
    from ipt_engine.data.tokenizer_info import load_tokenizer, tokenizer_fingerprint
    from ipt_engine.train.config import LoaderConfig, StreamConfig
    from ipt_engine.train.data import build_dataloader, plan_loader

    tok = load_tokenizer("mistral-v1", backend_only=True)
    cfg = LoaderConfig(streams={"bench": StreamConfig(local=str(shards))}, num_workers=workers, shuffle=False,
                       max_seq_len=SEQ, drop_last=True, pin_memory=False, persistent_workers=False)
    plan = plan_loader(cfg, "train_loader", tokenizer_fingerprint(tok, "mistral-v1"))
    return build_dataloader(plan, device_batch_size=BATCH, seed=17, eos_id=tok.eos_token_id, pad_id=0,
                            vocab_size=len(tok))


def consume(loader: Any, *, ours: bool) -> tuple[float, int, int]:
    """Iterate one epoch; return (seconds from the second batch on, samples, tokens) after the first."""
    from ipt_engine.kernels.metadata import build_packed_metadata

    it = iter(loader)
    first = next(it)
    t = time.perf_counter()
    samples = tokens = 0
    for batch in it:
        if ours:
            meta = build_packed_metadata(batch["doc_lens"], batch["input_ids"].shape[1])
            del meta
            ids = batch["input_ids"]
        else:
            ids = batch["tokens"]
        samples += ids.shape[0]
        tokens += ids.numel()
    del first
    return time.perf_counter() - t, samples, tokens


def measure(side: str, shards: Path, workers: int) -> tuple[float, float]:
    """(samples/s, tokens/s) of one full pass of ``side`` at ``workers``."""
    loader = (ours_loader if side == "ours" else baseline_loader)(shards, workers)
    seconds, samples, tokens = consume(loader, ours=side == "ours")
    del loader
    _clean_shared_memory()
    return samples / seconds, tokens / seconds


def profile(shards: Path, out_dir: Path, steps: int = 12) -> dict[str, Any]:
    """torch.profiler over ``steps`` batches of ours in this process (num_workers 0)."""
    import torch
    from ipt_engine.kernels.metadata import build_packed_metadata
    from torch.profiler import ProfilerActivity, record_function

    from benchmarks.profiling import write_profile

    loader = ours_loader(shards, 0)
    it = iter(loader)
    next(it)
    with torch.profiler.profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            with record_function("loader: next batch (dataset + collate)"):
                batch = next(it, None)
            if batch is None:
                break
            with record_function("loader: attention metadata"):
                build_packed_metadata(batch["doc_lens"], batch["input_ids"].shape[1])
    for _ in it:  # finish the epoch: Streaming's prepare thread must not outlive the shards directory
        pass
    del it, loader
    _clean_shared_memory()
    # The record_function ranges mark dataset + collate and metadata on the trace's timeline; the table
    # ranks the operators inside them (self time, so a range's children are not counted twice).
    return write_profile(prof, out_dir, "loader-ours-w0", steps=steps)


def run(*, quick: bool = False, copies: int | None = None, repeats: int | None = None,
        workers: tuple[int, ...] = (0, 2), profile_dir: Path | None = None,
        out_dir: str | Path | None = None) -> Path:
    copies = copies or (1 if quick else 8)
    repeats = repeats or (1 if quick else 5)
    work = Path(tempfile.mkdtemp(prefix="ipt-bench-loader-"))
    try:
        shards = make_shards(work, copies)
        rates: dict[tuple[str, int], list[tuple[float, float]]] = {}
        for r in range(repeats):
            for w in workers:
                order = ("baseline", "ours") if r % 2 == 0 else ("ours", "baseline")
                for side in order:
                    rates.setdefault((side, w), []).append(measure(side, shards, w))
                    sps, tps = rates[(side, w)][-1]
                    print(f"repeat {r + 1} workers={w} {side:8s} {sps:8.0f} samples/s {tps / 1e6:6.2f}M tok/s",
                          flush=True)
        cases = []
        for w in workers:
            for k, unit in ((0, "samples/s"), (1, "tokens/s")):
                base = [x[k] for x in rates[("baseline", w)]]
                ours = [x[k] for x in rates[("ours", w)]]
                c = case(f"loader num_workers={w} ({unit.split('/')[0]})",
                         {"num_workers": w, "batch": BATCH, "seq_len": SEQ, "copies": copies},
                         unit, spread(base)["median"], spread(ours)["median"], repeats=repeats,
                         spread={"baseline": spread(base)["range"], "ours": spread(ours)["range"]})
                cases.append(c)
                if k == 0:
                    print(f"{c['name']}: ours {c['ours']:.0f} vs bare {c['baseline']:.0f} -> {c['ratio']:.2f}x")
        extra: dict[str, Any] = {"notes": NOTES}
        if profile_dir is not None:
            extra["profile"] = {k: str(v) for k, v in profile(shards, Path(profile_dir)).items()}
        return write_results("loader", cases, out_dir=out_dir, extra=extra)
    finally:
        shutil.rmtree(work, ignore_errors=True)


NOTES = (
    "Baseline: stock StreamingDataset + DataLoader with default collate of the tokens column. Ours: the "
    "loader ipt train builds (normalized tokens + doc_lens samples, packed collator with labels and "
    "per-document position ids) plus the per-microbatch attention metadata of the forward. One epoch, "
    "unshuffled, batch 8 x 2048, timed from the second batch. Profile (cProfile and torch.profiler, num_workers 0) "
    "of the first version: 0.06x at num_workers 0 and 0.22x at 2; 90 % of ours was build_packed_metadata's "
    "batched torch.searchsorted (15-45 ms per 8 x 2048 batch on CPU, worst with few documents per row), the "
    "collator 2.6 ms and the dataset 1.5 ms per batch. Changed: the CPU metadata path is NumPy run-length "
    "expansion (0.2 ms) with its checks in NumPy too, because any torch op in the loader's main process wakes "
    "the OpenMP pool, whose spinning threads took the cores from the two loader workers (at num_workers 2 that "
    "alone cost 14 ms per batch), and the collator builds positions and labels for the whole batch in one "
    "run-length expansion (2.6 -> 0.15 ms). What is left (idle 2-core EPYC, per 8 x 2048 batch, num_workers 0): "
    "the bare loader 1.5-1.8 ms, ours 3.3 ms plus 0.7 ms of metadata; iterating the two datasets alone costs the "
    "same (2.06 vs 2.08 ms per 8 samples), so the difference is the work the bare loader does not do (int64 "
    "input_ids, labels and position_ids, doc_lens, attention metadata) - about 0.3 % of the demo's 1.2 s CPU "
    "training step, which is why the 0.9x goal is not met and was not pursued further."
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one copy of the corpus, one repeat (smoke run)")
    ap.add_argument("--copies", type=int, default=None, help="copies of the default corpus converted to shards")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="num_workers values to measure")
    ap.add_argument("--profile", type=Path, default=None, metavar="DIR", help="write a profile of ours under DIR")
    ap.add_argument("--out-dir", "--out", dest="out_dir", default=None, help="results directory")
    args = ap.parse_args(argv)
    print(run(quick=args.quick, copies=args.copies, repeats=args.repeats, workers=tuple(args.workers),
              profile_dir=args.profile, out_dir=args.out_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
