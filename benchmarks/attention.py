"""Packed (document-masked) attention on GPU: ours against dense-mask SDPA, compiled FlexAttention and
flash-attn varlen (where installed).

    python -m benchmarks.attention            # full sweep (H100: a few minutes, mostly compilation)
    python -m benchmarks.attention --quick    # smoke run: one small case
    python -m benchmarks.attention --budget 300   # the cases that fit in about 5 minutes, most important first

Cases: total lengths 2k-32k tokens (rows of at most 8k), head dims 64 and 128, document mixes
``uniform`` (lengths uniform in [row/16, row/4]), ``long_tailed`` (Pareto, like a packed corpus) and
``one_document`` (one document per row); 16 query heads and 4 k/v heads (GQA), bf16. For forward,
backward and both: median ms (with 20th/80th percentiles), TFLOP/s counted over unmasked pairs only
(sum_i L_i (L_i + 1) / 2 per head, x 4 x head_dim forward, x 2.5 that backward) and peak memory.
Results: ``benchmarks/results/attention-<gpu>-<date>.json`` (format: docs/ARCHITECTURE.md, "Benchmark
results"; one row per mode x case x baseline, ``ratio`` > 1 means ours is faster) and a PNG beside it.

FlexAttention runs under ``torch.compile`` with one specialization per shape and grad mode (12 in the
full sweep, beyond torch's default recompile limit of 8, past which it would silently fall back to an
uncompiled path that materializes the score matrix): the suite raises the limit, makes a limit hit an
error, and checks after every case that flex ran compiled. Every measurement (max-error pass included)
sits inside the out-of-memory handler, and the results file is rewritten atomically after every case.

Needs CUDA: without it the suite prints why and exits with status 0 without writing results.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

from benchmarks.common import case, write_results

HEADS_Q, HEADS_KV = 16, 4
ROW_LEN = 8192  # the longest packed row; larger totals are several rows
MODES = ("fwd", "bwd", "fwd+bwd")
FLOP_FACTOR = {"fwd": 1.0, "bwd": 2.5, "fwd+bwd": 3.5}  # relative to the forward's 4 * D per pair
# Issue 5's H100 targets (bf16, 4 x 8k long-tailed, 16/4 heads, D 128).
TARGET = {"mix": "long_tailed", "total": 32768, "head_dim": 128}
# Planning estimates on an H100 host (seconds), used by --budget to pick the cases that fit: one
# Triton config compile (the autotuner compiles its offered configs once per kernel and head dim; the
# median offered config compiles in 1.2 s, ptxas included, on the 2-core CPU of the ahead-of-time
# sweep), the autotuner timing one config for one key, one Inductor compile of flex per shape and grad
# mode, and one do_bench timing (25 ms warmup + 100 ms, plus launch and synchronization).
EST_TRITON_COMPILE_S, EST_AUTOTUNE_BENCH_S, EST_INDUCTOR_COMPILE_S, EST_TIMING_S = 1.2, 0.15, 25.0, 0.6
FLEX_RECOMPILE_LIMIT = 64  # > 2 grad modes x every (total, head_dim) shape of the sweep


def full_grid() -> list[tuple[str, int, int]]:
    """Every (mix, total, head_dim) case, in the order a budget keeps them: the issue-5 target first,
    then small to large so a short budget still covers both head dims."""
    grid = [(mix, total, dim) for total in (2048, 8192, 32768) for dim in (64, 128)
            for mix in ("uniform", "long_tailed", "one_document")]
    target = (TARGET["mix"], TARGET["total"], TARGET["head_dim"])
    return [target] + [c for c in grid if c != target]


def _tuned_config_count(head_dim: int) -> int:
    """Configs the autotuner compiles for one head dim (forward + dK/dV + dQ, pruned for an H100)."""
    from ipt_engine.kernels.autotune_configs import offered_configs

    return sum(len(offered_configs(k, head_dim, 90)) for k in ("fwd", "bwd_dkdv", "bwd_dq"))


def estimate_case_s(case_: tuple[str, int, int], modes: tuple[str, ...], seen: set, n_backends: int = 3,
                    *, triton_cached: bool = False) -> float:
    """Planned seconds for one case given what earlier cases already compiled (``seen`` is updated);
    ``triton_cached``: our kernels are already in Triton's on-disk cache."""
    mix, total, dim = case_
    est = 0.0
    if ("triton", dim) not in seen and not triton_cached:
        seen.add(("triton", dim))
        est += _tuned_config_count(dim) * EST_TRITON_COMPILE_S
    est += _tuned_config_count(dim) * EST_AUTOTUNE_BENCH_S  # each case brings a new length bucket
    for grad in (False, True):
        if ("flex", total, dim, grad) not in seen:
            seen.add(("flex", total, dim, grad))
            est += EST_INDUCTOR_COMPILE_S
    # Timings, plus the kernels' own run time (an 8k row costs ~ms) for the largest cases.
    est += (len(modes) * (n_backends + 1) + n_backends) * EST_TIMING_S * max(1.0, total / 8192)
    return est


def plan(grid: list[tuple[str, int, int]], modes: tuple[str, ...], budget_s: float | None, *,
         triton_cached: bool = False):
    """(kept cases with their planned seconds, skipped cases): cases are kept in order while they fit."""
    seen: set = set()
    kept, skipped, total = [], [], 0.0
    for case_ in grid:
        trial = set(seen)
        est = estimate_case_s(case_, modes, trial, triton_cached=triton_cached)
        if budget_s is not None and total + est > budget_s:
            skipped.append(case_)
            continue
        seen, total = trial, total + est
        kept.append((case_, est))
    return kept, skipped


def configure_flex(torch) -> None:
    """One compiled flex specialization per shape: raise the recompile limit and make a hit an error."""
    dynamo = torch._dynamo.config
    dynamo.recompile_limit = max(dynamo.recompile_limit, FLEX_RECOMPILE_LIMIT)
    dynamo.accumulated_recompile_limit = max(dynamo.accumulated_recompile_limit, 4 * FLEX_RECOMPILE_LIMIT)
    dynamo.fail_on_recompile_limit_hit = True


def flex_ran_compiled() -> bool:
    """True while dynamo compiled at least one frame, every frame it tried compiled (a frame that falls
    back to eager counts in ``total`` only) and nothing broke the graph."""
    from torch._dynamo.utils import counters

    frames = counters["frames"]
    return frames["ok"] > 0 and frames["total"] == frames["ok"] and not counters["graph_break"]


def document_lengths(mix: str, total: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    row_len = min(total, ROW_LEN)
    lens: list[int] = []
    for _ in range(total // row_len):
        left = row_len
        while left > 0:
            if mix == "one_document":
                n = left
            elif mix == "uniform":
                n = rng.randint(row_len // 16, row_len // 4)
            elif mix == "long_tailed":
                n = max(1, int(rng.paretovariate(1.2) * row_len / 64))
            else:
                raise ValueError(f"unknown mix {mix!r}")
            n = min(n, left)
            lens.append(n)
            left -= n
    return lens


def unmasked_flops(lens: list[int], heads: int, head_dim: int) -> float:
    return sum(n * (n + 1) / 2 for n in lens) * heads * 4 * head_dim


def _time(fn, torch, triton_testing) -> tuple[float, float, float, float]:
    """(median ms, p20 ms, p80 ms, peak MiB above the live tensors) of ``fn``."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    median, p20, p80 = triton_testing.do_bench(fn, warmup=25, rep=100, quantiles=[0.5, 0.2, 0.8])
    return median, p20, p80, peak


def _backends(q, k, v, cu, max_seqlen, torch):
    """kernels.backends name (``packed`` is ours) -> forward callable (inputs bound); masks built once, untimed."""
    from ipt_engine.kernels import packed_attention
    from ipt_engine.kernels.reference import dense_document_mask, flex_attention_backend, flex_block_mask

    total = q.shape[0]
    fns = {"packed": lambda: packed_attention(q, k, v, cu, max_seqlen=max_seqlen)}
    try:
        block_mask = flex_block_mask(cu, total)
        fns["flex"] = lambda: flex_attention_backend(q, k, v, cu, block_mask=block_mask)
    except torch.cuda.OutOfMemoryError:
        pass
    try:
        mask = dense_document_mask(cu, total)
        from ipt_engine.kernels.reference import sdpa_dense_attention

        fns["sdpa_dense"] = lambda: sdpa_dense_attention(q, k, v, cu, mask=mask)
    except torch.cuda.OutOfMemoryError:
        pass
    try:
        from flash_attn import flash_attn_varlen_func

        fns["flash_attn"] = lambda: flash_attn_varlen_func(q, k, v, cu, cu, max_seqlen, max_seqlen, causal=True)
    except ImportError:
        pass
    return fns


def _measure(fn, mode, do, inputs, torch, triton_testing):
    def zero_grads():
        for x in inputs:
            x.grad = None

    if mode == "fwd":
        with torch.no_grad():
            return _time(fn, torch, triton_testing)
    if mode == "bwd":
        out = fn()

        def bwd():
            zero_grads()
            out.backward(do, retain_graph=True)

        return _time(bwd, torch, triton_testing)

    def both():
        zero_grads()
        fn().backward(do)

    return _time(both, torch, triton_testing)


def run_case(mix, total, head_dim, modes, torch, triton_testing):
    lens = document_lengths(mix, total)
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, do = (torch.randn(total, h, head_dim, device="cuda", dtype=torch.bfloat16, generator=gen)
                   for h in (HEADS_Q, HEADS_KV, HEADS_KV, HEADS_Q))
    inputs = [x.requires_grad_() for x in (q, k, v)]
    fns = _backends(q, k, v, cu, max(lens), torch)
    params = {"mix": mix, "total": total, "n_docs": len(lens), "max_doc": max(lens), "head_dim": head_dim,
              "heads_q": HEADS_Q, "heads_kv": HEADS_KV, "dtype": "bfloat16"}
    max_err: dict[str, float | None] = {}
    try:
        with torch.no_grad():
            ours_out = fns["packed"]().float()
    except torch.cuda.OutOfMemoryError:
        ours_out = None
        torch.cuda.empty_cache()
    for name, fn in fns.items():
        if name == "packed":
            continue
        try:  # a baseline that does not fit is a result (OOM), never a crash of the sweep
            with torch.no_grad():
                max_err[name] = None if ours_out is None else (fn().float() - ours_out).abs().max().item()
        except torch.cuda.OutOfMemoryError:
            max_err[name] = None
            torch.cuda.empty_cache()
    del ours_out
    flops = unmasked_flops(lens, HEADS_Q, head_dim)
    rows, timings = [], {}
    for mode in modes:
        for name, fn in fns.items():
            try:
                timings[mode, name] = _measure(fn, mode, do, inputs, torch, triton_testing)
            except torch.cuda.OutOfMemoryError:
                timings[mode, name] = None
                torch.cuda.empty_cache()
            print(f"{mode:8s} {mix:12s} T={total:6d} D={head_dim:3d} {name:10s} "
                  f"{'OOM' if timings[mode, name] is None else f'{timings[mode, name][0]:.3f} ms'}", flush=True)
        ours = timings[mode, "packed"]
        if ours is None:  # ours did not fit: nothing to compare in this mode
            continue
        scale = flops * FLOP_FACTOR[mode] / 1e12

        def tflops(ms: float, scale: float = scale) -> float:
            return scale / (ms * 1e-3)

        for name in fns:
            if name == "packed":
                continue
            base = timings[mode, name]
            rows.append(case(
                f"{mode}/{mix}/T{total}/D{head_dim}/vs-{name}", {**params, "mode": mode, "baseline_impl": name},
                "ms", base[0] if base else None, ours[0], higher_is_better=False,
                ours_tflops=tflops(ours[0]), baseline_tflops=tflops(base[0]) if base else None,
                ours_p20_p80_ms=[ours[1], ours[2]], baseline_p20_p80_ms=[base[1], base[2]] if base else None,
                ours_peak_mib=ours[3], baseline_peak_mib=base[3] if base else None,
                max_abs_diff_vs_ours=max_err.get(name),
            ))
    if "flex" in fns and not flex_ran_compiled():
        raise RuntimeError("FlexAttention did not run compiled (recompile limit or graph break); its "
                           "timings would measure the uncompiled fallback")
    return rows


def profile_case(mix: str, total: int, head_dim: int, out_dir: Path, torch) -> list[dict]:
    """torch.profiler of 3 fwd+bwd iterations per backend on one case, after warm-up (compiles and
    autotuning stay outside); a trace and a kernel table per backend under ``out_dir``."""
    from benchmarks.profiling import activities, write_profile

    lens = document_lengths(mix, total)
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, do = (torch.randn(total, h, head_dim, device="cuda", dtype=torch.bfloat16, generator=gen)
                   for h in (HEADS_Q, HEADS_KV, HEADS_KV, HEADS_Q))
    for x in (q, k, v):
        x.requires_grad_()
    written = []
    for name, fn in _backends(q, k, v, cu, max(lens), torch).items():
        try:
            for _ in range(3):
                fn().backward(do)
            torch.cuda.synchronize()
            with torch.profiler.profile(activities=activities()) as prof:
                for _ in range(3):
                    fn().backward(do)
                torch.cuda.synchronize()
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            continue
        written.append(write_profile(prof, out_dir, f"attention-{name}-{mix}-T{total}-D{head_dim}", steps=3))
    return written


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    both = [r for r in rows if r["params"]["mode"] == "fwd+bwd"]
    mixes = sorted({r["params"]["mix"] for r in both})
    dims = sorted({r["params"]["head_dim"] for r in both})
    if not both:
        return
    fig, axes = plt.subplots(len(dims), len(mixes), figsize=(4.5 * len(mixes), 3.5 * len(dims)), squeeze=False)
    for i, dim in enumerate(dims):
        for j, mix in enumerate(mixes):
            ax = axes[i][j]
            sel = [r for r in both if r["params"]["head_dim"] == dim and r["params"]["mix"] == mix]
            series: dict[str, list[tuple[int, float]]] = {}
            for r in sel:
                series.setdefault("ours", []).append((r["params"]["total"], r["ours_tflops"]))
                if r["baseline_tflops"]:
                    series.setdefault(r["params"]["baseline_impl"], []).append(
                        (r["params"]["total"], r["baseline_tflops"]))
            for name, points in series.items():
                xs, ys = zip(*sorted(set(points)))
                ax.plot(xs, ys, marker="o", label=name)
            ax.set_xscale("log", base=2)
            ax.set_title(f"{mix}, D={dim}, fwd+bwd")
            ax.set_xlabel("total tokens")
            ax.set_ylabel("TFLOP/s (unmasked)")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small case (smoke run)")
    parser.add_argument("--out", type=Path, default=None, help="results directory (default benchmarks/results)")
    parser.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                        help="run only the cases planned to fit in SECONDS (target case first, then small to large)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="also write a torch.profiler trace + kernel table per backend of the target case")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("benchmarks.attention needs a CUDA GPU (Triton kernels vs FlexAttention / SDPA / flash-attn); "
              "no GPU here, nothing measured.", file=sys.stderr)
        return 0
    import triton.testing as triton_testing

    if args.quick:
        grid = [("long_tailed", 2048, 64)]
        modes: tuple[str, ...] = ("fwd", "fwd+bwd")
    else:
        grid = full_grid()
        modes = MODES
    kept, skipped = plan(grid, modes, args.budget)
    planned = sum(est for _, est in kept)
    print(f"{len(kept)} case(s) planned, ~{planned / 60:.1f} min; skipped for the budget: {skipped or 'none'}",
          flush=True)
    configure_flex(torch)
    rows: list[dict] = []
    started = time.perf_counter()
    for i, ((mix, total, dim), est) in enumerate(kept):
        elapsed = time.perf_counter() - started
        if args.budget is not None and elapsed + est > args.budget:  # estimates can be off: re-check live
            skipped.extend(c for c, _ in kept[i:])
            print(f"budget reached after {elapsed:.0f} s; skipping {len(kept) - i} case(s)", flush=True)
            break
        rows.extend(run_case(mix, total, dim, modes, torch, triton_testing))
        torch.cuda.empty_cache()
        # Rewritten (atomically) after every case: a crash or a kill keeps every finished case.
        path = write_results("attention", rows, out_dir=args.out,
                             extra={"complete": False, "skipped": [list(c) for c in skipped]})

    targets = {}
    for r in rows:
        p = r["params"]
        if (p["mix"], p["total"], p["head_dim"]) == (TARGET["mix"], TARGET["total"], TARGET["head_dim"]):
            if p["mode"] == "fwd+bwd" and p["baseline_impl"] in ("flex", "sdpa_dense"):
                targets[f"fwd+bwd speedup vs {p['baseline_impl']}"] = r["ratio"]
            if p["mode"] == "fwd":
                targets["fwd TFLOP/s"] = r["ours_tflops"]
    path = write_results("attention", rows, out_dir=args.out,
                         extra={"complete": True, "skipped": [list(c) for c in skipped],
                                "wall_s": round(time.perf_counter() - started, 1),
                                "targets": {"goals": {"fwd+bwd speedup vs flex": 1.2,
                                                      "fwd+bwd speedup vs sdpa_dense": 5.0,
                                                      "fwd TFLOP/s": 300.0}, "measured": targets}})
    plot(rows, path.with_suffix(".png"))
    if args.profile is not None:
        case_ = ("long_tailed", 2048, 64) if args.quick else (TARGET["mix"], TARGET["total"], TARGET["head_dim"])
        profile_case(*case_, args.profile, torch)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
