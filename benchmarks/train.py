"""Training throughput: packed rows with document masking against padding each document.

Same model, same documents, same optimizer steps. Each step trains on one group of documents:

- baseline: one document per row, padded to the longest in the group, transformers' own SDPA with a
  padding mask (what a trainer without packing does);
- ours: the same documents packed into rows of N by the collator, attention masked per document, with
  each backend: ``packed`` (Triton kernel on CUDA, PyTorch reference on CPU), ``flex`` and ``sdpa``
  (dense block-diagonal mask; CPU only: at 8×4096 tokens the mask alone is 1 GiB).

Reported: real (non-padding) tokens per second of forward + backward + AdamW step, median over steps.
Document lengths are drawn from a seeded log-normal (median ≈ N/6, clipped to [16, N]), the long-tailed
shape of web and instruction-augmented text.

The loss cases (``--cases loss``) time the demo's step (examples/tiny-cpu.yaml, one 4 × 2048
microbatch) with the LM head and cross-entropy over materialized logits against ours (chunked on CPU,
Liger's fused kernel on CUDA), split the step into model body and LM head + loss, sweep the chunk size
and the token count of the loss alone, and record peak memory (method below, ``MEMORY_METHOD``) and a
profile's top operators. ``python -m benchmarks.train [--quick] [--cases all|packing|loss]``.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from pathlib import Path
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


# --- The demo's training step: LM head + cross-entropy over full logits vs without them -----------------
#
# The demo model (examples/tiny-cpu.yaml: 64 wide, 2 layers, mistral-v1's 32k vocabulary) on one 4 × 2048
# microbatch, forward + backward + AdamW step, three ways with the same weights and batch:
#   body: the decoder alone, loss = a fixed random projection of its last hidden states (what the step
#         costs without any LM head: the split);
#   full: Hugging Face's loss over materialized logits (``model.cross_entropy: full``), the baseline;
#   ours: ``model.cross_entropy: auto`` (chunked on CPU, Liger's fused kernel on CUDA).
# Repeats are interleaved (body, full, ours; reversed on odd repeats); medians reported.
#
# Memory (peak_bytes): peak of live tensor bytes during one call above those live at its start, from
# the CPU allocator's events under torch.profiler (torch.cuda.max_memory_allocated on CUDA); one extra
# call per configuration, outside the timed ones.

DEMO_YAML = Path(__file__).resolve().parents[1] / "examples" / "tiny-cpu.yaml"
LOSS_MODES = ("body", "full", "ours")
MEMORY_METHOD = {False: "peak of live tensor bytes above the call's start, from the CPU allocator's events "
                        "under torch.profiler(profile_memory=True)",
                 True: "torch.cuda.max_memory_allocated above memory_allocated before the call"}


@functools.lru_cache(maxsize=1)
def _demo_model_config() -> tuple[tuple[str, Any], ...]:
    return tuple(demo_model_config_uncached().items())


def demo_model_config() -> dict[str, Any]:
    """The demo's Llama config (see :func:`demo_model_config_uncached`), read once per process."""
    return dict(_demo_model_config())


def demo_model_config_uncached() -> dict[str, Any]:
    """The demo's Llama: the YAML's config_overrides and the mistral-v1 tokenizer's vocabulary."""
    import yaml

    from ipt_engine.data.tokenizer_info import load_tokenizer

    doc = yaml.safe_load(DEMO_YAML.read_text())
    cfg = dict(doc["model"]["config_overrides"])
    cfg["vocab_size"] = len(load_tokenizer(doc["tokenizer"]["name"]))
    return cfg


def peak_bytes(fn: Callable[[], Any], device: str) -> int:
    """Peak bytes of tensors allocated while ``fn()`` runs, above those live when it starts.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the allocator's own record under
    ``torch.profiler.profile(profile_memory=True)`` (every allocation and free with its size and time;
    the peak of their running sum), which counts tensors exactly, unlike the process's RSS that glibc's
    free lists blur. The profiler slows the call, so timings are taken in separate, unprofiled calls.
    """
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()  # negative for a free
        peak = max(peak, live)
    return peak


class DemoStep:
    """One steady-state training step of a configuration, callable repeatedly (what a profiler wraps).

    ``mode``: ``body``, ``full`` or ``ours`` (``auto``), see above. Each instance has its own copy of
    the model (same seed, so the same weights) and optimizer; the batch is shared.
    """

    def __init__(self, mode: str, model_cfg: dict[str, Any], batch: dict[str, Any], device: str,
                 chunk_size: int = 2048):
        import torch

        from ipt_engine.train.composer_model import build_composer_model
        from ipt_engine.train.loss import resolve_mode

        self.mode, self.batch, self.device = mode, batch, device
        model = _model(model_cfg, "ipt_packed", device)
        self.cm = build_composer_model(model, None, "packed", "full" if mode in ("full", "body") else "auto",
                                       chunk_size)
        self.impl = "body" if mode == "body" else resolve_mode(self.cm.cross_entropy, device)
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        gen = torch.Generator(device="cpu").manual_seed(1)
        self.probe = torch.randn(model_cfg["hidden_size"], generator=gen).to(device)
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda"
                         else torch.autocast("cpu", enabled=False))

    def _body_loss(self) -> Any:
        from ipt_engine.kernels.metadata import build_packed_metadata

        from ipt_engine.train.attention import CONTEXT_KWARG, build_context

        b = self.batch
        meta = build_packed_metadata(b["doc_lens"], b["input_ids"].shape[1])
        ctx = build_context("packed", meta, self.device)
        out = self.cm.model.get_decoder()(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False,
                                          **{CONTEXT_KWARG: ctx})
        return (out.last_hidden_state * self.probe).mean()

    def __call__(self) -> float:
        with self.autocast:
            loss = self._body_loss() if self.mode == "body" else self.cm.loss(self.cm(self.batch), self.batch)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return float(loss)


def run_demo_steps(mode: str, n: int, *, device: str = "cpu", chunk_size: int = 2048) -> list[float]:
    """Seconds of ``n`` steady-state demo steps of ``mode`` after one warm-up step (for profilers)."""
    step = DemoStep(mode, demo_model_config(), demo_batch(device), device, chunk_size)
    step()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return times


def demo_batch(device: str, rows: int = 4, seq_len: int = 2048) -> dict[str, Any]:
    """One packed microbatch of the demo's shape: log-normal documents best-fit into ``rows`` × ``seq_len``."""
    vocab = demo_model_config()["vocab_size"]
    groups = _step_groups(_documents(rows * 12, seq_len, vocab, seed=0), rows, seq_len)
    group = next(g for g in groups if len(g) == rows)
    return _packed_batch(group, seq_len, device)


def _timed(step: Callable[[], Any], device: str) -> float:
    """Seconds of one call of ``step`` (synchronized on CUDA)."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def demo_step_cases(device: str, repeats: int, chunk_size: int = 2048,
                    rows: int = 4) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The demo step's time and loss memory, full logits vs ours, and the body/head split."""
    cfg = demo_model_config()
    batch = demo_batch(device, rows=rows)
    steps = {m: DemoStep(m, cfg, batch, device, chunk_size) for m in LOSS_MODES}
    for s in steps.values():  # warm-up: allocator, thread pools, first-touch of optimizer state
        s()
    times: dict[str, list[float]] = {m: [] for m in LOSS_MODES}
    for r in range(repeats):
        for m in (LOSS_MODES if r % 2 == 0 else LOSS_MODES[::-1]):
            times[m].append(_timed(steps[m], device))
    med = {m: statistics.median(v) for m, v in times.items()}
    tokens = int(batch["input_ids"].numel())
    params = {"rows": batch["input_ids"].shape[0], "seq_len": batch["input_ids"].shape[1], "tokens": tokens,
              "targets": int((batch["labels"] != -100).sum()), "device": device, "ours": steps["ours"].impl,
              "chunk_size": chunk_size, "steps": "forward+backward+AdamW", **cfg}
    split = {m: {"step_s": med[m], "lm_head_and_loss_s": med[m] - med["body"],
                 "lm_head_and_loss_share": (med[m] - med["body"]) / med[m]} for m in ("full", "ours")}
    split["body_s"] = med["body"]
    cases = [case(f"{device}-demo-step/full-vs-{steps['ours'].impl}", params, "s/step", med["full"], med["ours"],
                  higher_is_better=False, repeats=repeats,
                  spread={"baseline": [min(times["full"]), max(times["full"])],
                          "ours": [min(times["ours"]), max(times["ours"])]},
                  body_step_s_median=med["body"], split=split)]
    mib = {m: peak_bytes(steps[m], device) / 2**20 for m in LOSS_MODES}  # deterministic: one call each
    cases.append(case(f"{device}-demo-step/peak-memory", params, "MiB", mib["full"], mib["ours"],
                      higher_is_better=False, repeats=1, body_step_peak_mib=mib["body"],
                      full_logits_fp32_mib=tokens * cfg["vocab_size"] * 4 / 2**20,
                      chunk_logits_fp32_mib=min(chunk_size, tokens) * cfg["vocab_size"] * 4 / 2**20,
                      method=MEMORY_METHOD[device == "cuda"]))
    return cases, split


def loss_sweep_cases(device: str, chunk_sizes: list[int], row_counts: list[int], repeats: int,
                     chunk_rows: int = 4) -> list[dict[str, Any]]:
    """The LM head + loss alone on the demo's hidden size and vocabulary: time and peak memory of
    forward+backward, full logits vs chunked, across chunk sizes (time, O(chunk) memory) and token
    counts (full grows with tokens × vocab, chunked does not)."""
    import torch

    from ipt_engine.train.loss import causal_lm_loss

    cfg = demo_model_config()
    gen = torch.Generator().manual_seed(2)
    weight = (torch.randn(cfg["vocab_size"], cfg["hidden_size"], generator=gen) * 0.02).to(device)
    cases = []
    inputs = {}
    for rows in sorted({chunk_rows, *row_counts}):
        batch = demo_batch(device, rows=rows)
        hidden = torch.randn(*batch["input_ids"].shape, cfg["hidden_size"], generator=gen).to(device)
        inputs[rows] = (hidden, batch["labels"])

    def loss_step(rows: int, mode: str, chunk: int) -> Callable[[], None]:
        hidden, labels = inputs[rows]

        def run() -> None:
            h = hidden.detach().requires_grad_()
            w = weight.detach().requires_grad_()
            causal_lm_loss(h, w, labels, mode=mode, chunk_size=chunk).backward()

        return run

    def compare(name: str, rows: int, chunk: int) -> None:
        t: dict[str, list[float]] = {"full": [], "chunked": []}
        _timed(loss_step(rows, "chunked", chunk), device)  # warm-up
        for r in range(repeats):
            for m in (("full", "chunked") if r % 2 == 0 else ("chunked", "full")):
                t[m].append(_timed(loss_step(rows, m, chunk), device))
        params = {"rows": rows, "seq_len": 2048, "tokens": rows * 2048, "chunk_size": chunk, "device": device,
                  "hidden_size": cfg["hidden_size"], "vocab_size": cfg["vocab_size"], "steps": "loss forward+backward"}
        cases.append(case(f"{name}/time", params, "s", statistics.median(t["full"]), statistics.median(t["chunked"]),
                          higher_is_better=False, repeats=repeats,
                          spread={"baseline": [min(t["full"]), max(t["full"])],
                                  "ours": [min(t["chunked"]), max(t["chunked"])]}))
        mib = {m: peak_bytes(loss_step(rows, m, chunk), device) / 2**20 for m in ("full", "chunked")}
        cases.append(case(f"{name}/peak-memory", params, "MiB", mib["full"], mib["chunked"], higher_is_better=False,
                              repeats=1, full_logits_fp32_mib=rows * 2048 * cfg["vocab_size"] * 4 / 2**20,
                              chunk_logits_fp32_mib=min(chunk, rows * 2048) * cfg["vocab_size"] * 4 / 2**20,
                              method=MEMORY_METHOD[device == "cuda"]))

    for chunk in chunk_sizes:
        compare(f"{device}-lm-loss/chunk-{chunk}", chunk_rows, chunk)
    for rows in row_counts:
        compare(f"{device}-lm-loss/tokens-{rows * 2048}", rows, 2048)
    return cases


# How the train profile's time is split (first match wins; see benchmarks.profiling).
PROFILE_GROUPS = {
    "attention": ["attention", "packed_attn", "_attn", "flash", "sdpa", "flex"],
    "LM head + loss": ["cross_entropy", "log_softmax", "nll_loss", "logsumexp", "softmax"],
    "matmuls": ["aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "gemm"],
    "optimizer": ["optimizer", "adam", "_foreach", "zero_grad"],
    "data wait": ["dataloader", "enumerate(", "collate"],
}


def demo_profile(device: str, out_dir: Path | None = None) -> dict[str, Any]:
    """torch.profiler of one steady-state step per mode: top operators by self time (and, with
    ``out_dir``, each mode's operator table as text)."""
    from torch.profiler import ProfilerActivity, profile

    cfg = demo_model_config()
    batch = demo_batch(device)
    tables = {}
    for m in LOSS_MODES:
        step = DemoStep(m, cfg, batch, device)
        step()
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
        with profile(activities=acts) as prof:
            step()
        key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
        if out_dir is not None:
            from benchmarks.profiling import write_profile

            write_profile(prof, out_dir, f"train-demo-step-{m}-{device}", groups=PROFILE_GROUPS, steps=1)
        top = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)[:8]
        tables[m] = [{"op": e.key, "self_ms": getattr(e, key) / 1e3, "calls": e.count} for e in top]
    return tables


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    ap.add_argument("--out-dir", "--out", dest="out_dir", default=None)
    ap.add_argument("--profile", type=Path, default=None, metavar="DIR",
                    help="write each demo-step mode's torch.profiler trace and top-ops table under DIR")
    ap.add_argument("--cases", choices=("all", "packing", "loss"), default="all",
                    help="packing: packed vs padded rows; loss: the demo step, full logits vs ours")
    args = ap.parse_args(argv)
    cases: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    if args.cases in ("all", "packing"):
        cases += run_case("cpu-tiny-llama", TINY, seq_len=512, rows=4, n_docs=40 if args.quick else 240,
                          device="cpu", impls=["sdpa_dense", "packed", "flex"], warmup=1, precision="fp32")
        if torch.cuda.is_available():
            cases += run_case("gpu-llama-125m", LLAMA_125M, seq_len=4096, rows=8, n_docs=600 if args.quick else 1500,
                              device="cuda", impls=["packed", "flex"], warmup=2, precision="bf16")
    if args.cases in ("all", "loss"):
        for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
            # --quick: one 1 x 2048 row instead of the demo's 4 x 2048 microbatch, one repeat, one sweep
            # point: a smoke run of every case (minutes of CPU otherwise), not a figure to quote.
            demo, split = demo_step_cases(device, repeats=1 if args.quick else 5, rows=1 if args.quick else 4)
            cases += demo
            extra.setdefault("demo_step_split", {})[device] = split
            cases += loss_sweep_cases(device, [2048] if args.quick else [512, 1024, 2048, 4096, 8192],
                                      [1] if args.quick else [1, 2, 4], repeats=1 if args.quick else 3,
                                      chunk_rows=1 if args.quick else 4)
            if args.profile is not None or not args.quick:
                extra.setdefault("demo_step_profile", {})[device] = demo_profile(device, args.profile)
    path = write_results("train", cases, out_dir=args.out_dir, extra=extra)
    for c in cases:
        print(f"{c['name']:40s} baseline {c['baseline']:10.4g}  ours {c['ours']:10.4g} {c['unit']:9s} x{c['ratio']:.2f}")
    print(path)
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
