"""Training throughput: packed rows with document masking against padding each document.

Same model, same documents, same optimizer steps. Each step trains on one group of documents:

- baseline: one document per row, padded to the longest in the group, transformers' own SDPA with a
  padding mask (what a trainer without packing does);
- ours: the same documents packed into rows of N by the collator, attention masked per document, with
  each backend: ``packed`` (Triton kernel on CUDA, PyTorch reference on CPU), ``flex`` and ``sdpa``
  (dense block-diagonal mask; CPU only: at 8×4096 tokens the mask alone is 1 GiB).

Reported: real (non-padding) tokens per second of forward + backward + AdamW step, median over steps.
Document lengths are drawn from a seeded log-normal (median ≈ N/6, clipped to [16, N]), the long-tailed
shape of web and instruction-augmented text. ``python -m benchmarks.train [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np

from benchmarks.common import case, write_results


def _documents(n_docs: int, seq_len: int, vocab: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    lens = np.clip(rng.lognormal(np.log(seq_len / 6), 0.9, n_docs).astype(int), 16, seq_len)
    return [rng.integers(3, vocab, size=int(n)) for n in lens]


def _step_groups(docs: list[np.ndarray], rows: int, seq_len: int) -> list[list[list[np.ndarray]]]:
    """Best-fit-decreasing into ``rows`` rows of ``seq_len`` per step; each step is a list of rows."""
    steps, pending = [], sorted(docs, key=len, reverse=True)
    while pending:
        bins: list[list[np.ndarray]] = [[] for _ in range(rows)]
        free = [seq_len] * rows
        rest = []
        for d in pending:
            fits = [i for i in range(rows) if free[i] >= len(d)]
            if fits:
                i = min(fits, key=lambda j: free[j])
                bins[i].append(d)
                free[i] -= len(d)
            else:
                rest.append(d)
        steps.append([b for b in bins if b])
        pending = rest
    return steps


def _model(cfg: dict[str, Any], attn: str, device: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from ipt_engine.train.attention import register_attention

    register_attention()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(LlamaConfig(**cfg), attn_implementation=attn, torch_dtype=torch.float32)
    return model.to(device)


def _time_steps(step_fn, batches: list[Any], warmup: int) -> tuple[float, list[float]]:
    import torch

    for b in batches[:warmup]:
        step_fn(b)
    times = []
    for b in batches[warmup:]:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        step_fn(b)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def _padded_batch(rows: list[list[np.ndarray]], device: str) -> dict[str, Any]:
    import torch

    docs = [d for row in rows for d in row]
    width = max(len(d) for d in docs)
    ids = torch.zeros(len(docs), width, dtype=torch.long)
    mask = torch.zeros(len(docs), width, dtype=torch.long)
    for i, d in enumerate(docs):
        ids[i, : len(d)] = torch.from_numpy(d)
        mask[i, : len(d)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device),
            "tokens": int(mask.sum())}


def _packed_batch(rows: list[list[np.ndarray]], seq_len: int, device: str) -> dict[str, Any]:
    from ipt_engine.train.collator import PackedCollator

    samples = [{"tokens": np.concatenate(r), "doc_lens": np.array([len(d) for d in r])} for r in rows]
    batch = {k: v.to(device) for k, v in PackedCollator(seq_len, 0)(samples).items()}
    batch["tokens"] = int(batch["doc_lens"].sum())
    return batch


def run_case(name: str, model_cfg: dict[str, Any], *, seq_len: int, rows: int, n_docs: int, device: str,
             impls: list[str], warmup: int, precision: str) -> list[dict[str, Any]]:
    import torch

    from ipt_engine.train.attention import REGISTERED
    from ipt_engine.train.composer_model import build_composer_model

    docs = _documents(n_docs, seq_len, model_cfg["vocab_size"], seed=0)
    groups = _step_groups(docs, rows, seq_len)
    groups = [g for g in groups if len(g) == rows] or groups  # full steps only, when there are enough
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16" else torch.autocast("cpu", enabled=False)

    def trainer_step(model, forward):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(batch):
            with autocast:
                loss = forward(batch)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    baseline_model = _model(model_cfg, "sdpa", device)
    padded = [_padded_batch(g, device) for g in groups]
    tokens = sum(b["tokens"] for b in padded[warmup:])
    step = trainer_step(baseline_model, lambda b, m=baseline_model: m(input_ids=b["input_ids"],
                                                                      attention_mask=b["attention_mask"],
                                                                      labels=b["labels"]).loss)
    _, base_times = _time_steps(step, padded, warmup)
    base_tps = tokens / sum(base_times)
    pad_fill = tokens / sum(b["input_ids"].numel() for b in padded[warmup:])
    del baseline_model
    results = []
    for impl in impls:
        model = _model(model_cfg, REGISTERED[impl], device)
        cm = build_composer_model(model, None, impl)
        packed = [_packed_batch(g, seq_len, device) for g in groups]
        step = trainer_step(model, lambda b, cm=cm: cm.loss(cm(b), b))
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        _, times = _time_steps(step, packed, warmup)
        tps = tokens / sum(times)
        fill = tokens / sum(b["input_ids"].numel() for b in packed[warmup:])
        extra = {"ours_step_s_median": statistics.median(times), "baseline_step_s_median": statistics.median(base_times),
                 "ours_step_s_spread": [min(times), max(times)], "baseline_step_s_spread": [min(base_times), max(base_times)],
                 "fill_packed": round(fill, 3), "fill_padded": round(pad_fill, 3)}
        if device == "cuda":
            extra["ours_peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        results.append(case(f"{name}/{impl}", {"seq_len": seq_len, "rows": rows, "steps": len(times),
                                               "device": device, "precision": precision, **model_cfg},
                            "tokens/s", base_tps, tps, **extra))
        del model, cm
    return results


TINY = dict(vocab_size=2048, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=4096)
LLAMA_125M = dict(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                  num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=4096,
                  tie_word_embeddings=True)


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args(argv)
    cases = run_case("cpu-tiny-llama", TINY, seq_len=512, rows=4, n_docs=120 if args.quick else 240, device="cpu",
                     impls=["sdpa", "packed", "flex"], warmup=1, precision="fp32")
    if torch.cuda.is_available():
        cases += run_case("gpu-llama-125m", LLAMA_125M, seq_len=4096, rows=8, n_docs=600 if args.quick else 1500,
                          device="cuda", impls=["packed", "flex"], warmup=2, precision="bf16")
    path = write_results("train", cases, out_dir=args.out_dir)
    for c in cases:
        print(f"{c['name']:32s} padded {c['baseline']:10.0f}  packed {c['ours']:10.0f} tok/s  x{c['ratio']:.2f}")
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
