"""First run on a new GPU machine: correctness at real sizes, the attention and train suites, a profile.

    python -m benchmarks.gpu_check --out gpu-check/          # one CUDA GPU, planned < 8 min on an H100
    python -m benchmarks.gpu_check --dry-run                 # anywhere: every step, its sizes and time

Steps, all written under ``--out``:

1. ``env.json``: GPU, compute capability, torch / Triton versions, the autotune configs offered.
2. ``correctness.json``: the Triton kernel's output and dQ / dK / dV, fp16 and bf16, 2k-32k packed
   tokens (long-tailed documents in rows of up to 8k), head dims 64 / 128, GQA 1 / 2 / 4, against the
   float64 per-document reference, and against compiled FlexAttention on a subset. The reference is
   computed document by document and k/v head by k/v head (documents do not interact), so its float64
   score matrices stay a few GiB even for one 8k document.
3. ``profile/``: a torch.profiler trace (Chrome JSON) and the kernel table of ours and flex, fwd+bwd.
4. ``attention/``: ``benchmarks.attention --budget`` with the time the plan leaves.
5. ``train/``: ``benchmarks.train --quick``.

``gpu_check.json`` records every step's status and wall time, rewritten after each step. Exit status 1
when a correctness check fails or a suite crashes, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

DTYPES = ("float16", "bfloat16")
TOTALS = (2048, 8192, 32768)
HEAD_DIMS = (64, 128)
GQA = (1, 2, 4)  # q heads per k/v head
HEADS_Q = 16
# (dtype, total, head_dim, gqa) also checked against FlexAttention: the profile's shape, so its compile is
# reused there; the attention suite compares flex with ours at every case it runs.
FLEX_CASES = [("bfloat16", 8192, 128, 4)]
# (output, gradient) tolerance relative to the reference's largest magnitude (the kernel tests' values).
TOLERANCE = {"float16": (2e-3, 1e-2), "bfloat16": (1.6e-2, 4e-2), "float32": (2e-5, 5e-5)}
PLAN_S = 450.0  # the whole check: 7.5 min, inside the 8-minute goal
TRAIN_S = 90.0  # planned for `benchmarks.train --quick` on one H100 (model build + compile + steps)
ATTENTION_MIN_S = 90.0  # enough for the issue-5 target case (T 32768, D 128) with its flex compiles
# Planning estimates on an H100 host (seconds): see benchmarks.attention for the compile figures.
EST_CASE_RUN_S = 1.0  # one correctness case: ours fwd+bwd, the float64 reference loop, comparisons
EST_PROFILE_S = 15.0
EST_ENV_S = 5.0


@dataclass
class Step:
    name: str
    sizes: str
    est_s: float
    run: object = field(repr=False, default=None)


def correctness_cases() -> list[tuple[str, int, int, int]]:
    return [(dtype, total, dim, gqa) for dtype in DTYPES for dim in HEAD_DIMS for total in TOTALS for gqa in GQA]


def _compile_estimate_s() -> float:
    """Triton compiles the correctness pass triggers: every offered config per kernel variant and dtype."""
    from ipt_engine.kernels.autotune_configs import offered_configs

    from benchmarks.attention import EST_AUTOTUNE_BENCH_S, EST_INDUCTOR_COMPILE_S, EST_TRITON_COMPILE_S

    n = 0
    for dim in HEAD_DIMS:
        fwd, dq, dkdv = (len(offered_configs(k, dim, 90)) for k in ("fwd", "bwd_dq", "bwd_dkdv"))
        # fwd / dQ once; dK/dV twice (ATOMIC is an autotune key: GQA 1 stores, GQA 2 / 4 add atomically).
        n += (fwd + dq + 2 * dkdv) * len(DTYPES)
    # Each config is timed once per length bucket: 2048 for T 2048, the longest document's (<= 8192) above.
    return n * (EST_TRITON_COMPILE_S + 2 * EST_AUTOTUNE_BENCH_S) + 2 * len(FLEX_CASES) * EST_INDUCTOR_COMPILE_S


def plan_steps(out: Path) -> list[Step]:
    cases = correctness_cases()
    steps = [
        Step("env", "GPU, capability, versions, offered autotune configs", EST_ENV_S, _step_env),
        Step("correctness",
             f"{len(cases)} cases: {'/'.join(DTYPES)} x T {'/'.join(map(str, TOTALS))} x D "
             f"{'/'.join(map(str, HEAD_DIMS))} x GQA {'/'.join(map(str, GQA))} ({HEADS_Q} q heads), fwd + "
             f"dQ/dK/dV vs float64; vs flex at {len(FLEX_CASES)}",
             _compile_estimate_s() + len(cases) * EST_CASE_RUN_S, _step_correctness),
        Step("profile", "torch.profiler: ours and flex fwd+bwd, bf16, T 8192, D 128, GQA 4", EST_PROFILE_S,
             _step_profile),
    ]
    used = sum(s.est_s for s in steps)
    attention_s = max(ATTENTION_MIN_S, PLAN_S - used - TRAIN_S)
    from benchmarks.attention import MODES, full_grid, plan

    kept, _ = plan(full_grid(), MODES, attention_s, triton_cached=True)
    # The suite plans its own Triton compiles, which the correctness step has already left in Triton's
    # on-disk cache (same bf16 kernels, same GQA 4): it is given that much more budget, not more time.
    credit = sum(plan([c], MODES, None)[0][0][1] - est for c, est in kept)
    suite_budget = attention_s + credit
    steps.append(Step("attention", f"benchmarks.attention --budget {suite_budget:.0f}: "
                      f"{len(kept)} case(s) " + ", ".join(f"{m}/T{t}/D{d}" for (m, t, d), _ in kept),
                      attention_s, _suite(["-m", "benchmarks.attention", "--budget", f"{suite_budget:.0f}",
                                           "--out", str(out / "attention")], attention_s)))
    steps.append(Step("train", "benchmarks.train --quick", TRAIN_S,
                      _suite(["-m", "benchmarks.train", "--quick", "--out-dir", str(out / "train")], TRAIN_S)))
    return steps


# --------------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------------


def _step_env(out: Path) -> dict:
    import torch
    import triton
    from ipt_engine.kernels.autotune_configs import TUNED_BLOCKS, device_capability, offered_configs

    from benchmarks.common import env_record

    capability = device_capability()
    record = {**env_record(), "capability": capability, "triton_version": triton.__version__,
              "cuda": torch.version.cuda,
              "offered_configs": {k: {d: sorted(offered_configs(k, d, capability)) for d in HEAD_DIMS}
                                  for k in TUNED_BLOCKS}}
    (out / "env.json").write_text(json.dumps(record, indent=2) + "\n")
    return {"gpu": record["gpu"], "capability": capability}


def _inputs(total: int, head_dim: int, gqa: int, dtype, seed: int, *, heads_q: int = HEADS_Q,
            device: str = "cuda"):
    import torch

    from benchmarks.attention import document_lengths

    lens = document_lengths("long_tailed", total, seed=seed)
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32, device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    heads_kv = heads_q // gqa
    q, k, v, do = (torch.randn(total, h, head_dim, device=device, dtype=dtype, generator=gen)
                   for h in (heads_q, heads_kv, heads_kv, heads_q))
    return lens, cu, q, k, v, do


def reference_grads(q, k, v, do, lens: list[int]):
    """float64 output and dQ/dK/dV, one document and one k/v head (with its q heads) at a time."""
    import torch
    from ipt_engine.kernels.reference import reference_attention

    total, heads_q, _ = q.shape
    groups = heads_q // k.shape[1]
    out = torch.empty(q.shape, dtype=torch.float64, device=q.device)
    dq, dk, dv = (torch.empty(x.shape, dtype=torch.float64, device=q.device) for x in (q, k, v))
    start = 0
    for n in lens:
        sl = slice(start, start + n)
        cu = torch.tensor([0, n], dtype=torch.int32, device=q.device)
        for h in range(k.shape[1]):
            qs = slice(h * groups, (h + 1) * groups)
            qd = q[sl, qs].to(torch.float64).requires_grad_()
            kd = k[sl, h:h + 1].to(torch.float64).requires_grad_()
            vd = v[sl, h:h + 1].to(torch.float64).requires_grad_()
            o = reference_attention(qd, kd, vd, cu)
            o.backward(do[sl, qs].to(torch.float64))
            out[sl, qs], dq[sl, qs], dk[sl, h:h + 1], dv[sl, h:h + 1] = o.detach(), qd.grad, kd.grad, vd.grad
        start += n
    return out, dq, dk, dv


def _rel_err(x, ref) -> float:
    return ((x.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()


def check_case(dtype_name: str, total: int, dim: int, gqa: int, *, seed: int, with_flex: bool,
               heads_q: int = HEADS_Q, device: str = "cuda") -> dict:
    """One correctness case: ours (fwd + dQ/dK/dV) against float64, and against flex when asked."""
    import torch
    from ipt_engine.kernels import packed_attention
    from ipt_engine.kernels.reference import flex_attention_backend, flex_block_mask

    from benchmarks.attention import flex_ran_compiled

    dtype = getattr(torch, dtype_name)
    lens, cu, q, k, v, do = _inputs(total, dim, gqa, dtype, seed, heads_q=heads_q, device=device)
    started = time.perf_counter()
    leaves = [x.detach().clone().requires_grad_() for x in (q, k, v)]
    o = packed_attention(*leaves, cu, max_seqlen=max(lens))
    o.backward(do)
    ours = [o.detach(), *(x.grad for x in leaves)]
    ref = reference_grads(q, k, v, do, lens)
    tol_out, tol_grad = TOLERANCE[dtype_name]
    errs = {name: _rel_err(a, b) for name, a, b in zip(("out", "dq", "dk", "dv"), ours, ref)}
    ok = errs["out"] <= tol_out and all(errs[g] <= tol_grad for g in ("dq", "dk", "dv"))
    row = {"dtype": dtype_name, "total": total, "head_dim": dim, "gqa": gqa, "heads_q": heads_q,
           "n_docs": len(lens), "max_doc": max(lens), "rel_err_vs_float64": errs,
           "tolerance": {"out": tol_out, "grads": tol_grad}}
    if with_flex:
        leaves_f = [x.detach().clone().requires_grad_() for x in (q, k, v)]
        of = flex_attention_backend(*leaves_f, cu, block_mask=flex_block_mask(cu, total))
        of.backward(do)
        flex = [of.detach(), *(x.grad for x in leaves_f)]
        names = ("out", "dq", "dk", "dv")
        row["rel_err_flex_vs_float64"] = {n: _rel_err(a, b) for n, a, b in zip(names, flex, ref)}
        row["rel_err_vs_flex"] = {n: _rel_err(a, b.double()) for n, a, b in zip(names, ours, flex)}
        row["flex_compiled"] = flex_ran_compiled()
        ok = ok and row["flex_compiled"] and row["rel_err_vs_flex"]["out"] <= tol_out
    row["ok"] = ok
    row["wall_s"] = round(time.perf_counter() - started, 2)
    return row


def _step_correctness(out: Path) -> dict:
    import torch

    from benchmarks.attention import configure_flex
    from ipt_engine.io.atomic import atomic_write_json

    configure_flex(torch)
    rows, failures = [], 0
    for i, case_ in enumerate(correctness_cases()):
        row = check_case(*case_, seed=i, with_flex=case_ in FLEX_CASES)
        failures += not row["ok"]
        rows.append(row)
        errs = row["rel_err_vs_float64"]
        print(f"  {'ok  ' if row['ok'] else 'FAIL'} {row['dtype']:8s} T={row['total']:5d} D={row['head_dim']:3d} "
              f"GQA {row['gqa']}: " + " ".join(f"{n} {e:.1e}" for n, e in errs.items()), flush=True)
        atomic_write_json(out / "correctness.json", {"cases": rows, "failures": failures})
        torch.cuda.empty_cache()
    return {"cases": len(rows), "failures": failures, "ok": failures == 0}


def _step_profile(out: Path) -> dict:
    import torch
    from ipt_engine.kernels import packed_attention
    from ipt_engine.kernels.reference import flex_attention_backend, flex_block_mask
    from torch.profiler import ProfilerActivity, profile

    lens, cu, q, k, v, do = _inputs(8192, 128, 4, torch.bfloat16, seed=0)
    leaves = [x.requires_grad_() for x in (q, k, v)]
    block_mask = flex_block_mask(cu, q.shape[0])
    fns = {"packed": lambda: packed_attention(*leaves, cu, max_seqlen=max(lens)),
           "flex": lambda: flex_attention_backend(*leaves, cu, block_mask=block_mask)}
    (out / "profile").mkdir(parents=True, exist_ok=True)
    for name, fn in fns.items():
        for _ in range(3):  # compile / autotune outside the profile
            fn().backward(do)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                fn().backward(do)
            torch.cuda.synchronize()
        prof.export_chrome_trace(str(out / "profile" / f"{name}-trace.json"))
        table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25)
        (out / "profile" / f"{name}-kernels.txt").write_text(table + "\n")
    return {"files": sorted(p.name for p in (out / "profile").iterdir())}


def _suite(args: list[str], budget_s: float):
    """A suite in its own process (its compile caches and CUDA context stay out of this one)."""

    def run(out: Path) -> dict:
        log = out / f"{args[1].split('.')[-1]}.log"
        (out / args[1].split(".")[-1]).mkdir(parents=True, exist_ok=True)
        try:  # a hung suite must not eat the rest of the check: cut it at twice its plan
            with log.open("w") as f:
                rc = subprocess.run([sys.executable, *args], stdout=f, stderr=subprocess.STDOUT,
                                    timeout=2 * budget_s + 60).returncode
        except subprocess.TimeoutExpired:
            rc = 124
        return {"returncode": rc, "log": log.name, "ok": rc == 0}

    return run


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="First check on a new GPU machine: kernel correctness at real "
                                     "sizes, attention and train suites, a profile; all under --out.")
    parser.add_argument("--out", type=Path, default=Path("gpu-check"), help="output directory (default gpu-check/)")
    parser.add_argument("--dry-run", action="store_true", help="print the steps, sizes and planned time; run nothing")
    parser.add_argument("--skip", action="append", default=[], choices=("correctness", "profile", "attention", "train"),
                        help="leave a step out (repeatable)")
    args = parser.parse_args(argv)

    steps = [s for s in plan_steps(args.out) if s.name not in args.skip]
    total = sum(s.est_s for s in steps)
    print(f"gpu_check: {len(steps)} steps, planned {total / 60:.1f} min on one H100, output in {args.out}/")
    for i, step in enumerate(steps, 1):
        print(f"  {i}. {step.name:12s} ~{step.est_s:5.0f} s  {step.sizes}")
    if args.dry_run:
        return 0

    import torch

    if not torch.cuda.is_available():
        from ipt_engine.errors import UserError

        raise SystemExit(_user_error(UserError("gpu_check needs one CUDA GPU; none is visible here "
                                               "(use --dry-run to see the plan)")))
    from ipt_engine.io.atomic import atomic_write_json

    args.out.mkdir(parents=True, exist_ok=True)
    record = {"planned_s": round(total), "steps": []}
    started = time.perf_counter()
    failed = False
    for step in steps:
        print(f"== {step.name} (planned ~{step.est_s:.0f} s)", flush=True)
        t0 = time.perf_counter()
        try:
            result = step.run(args.out)
        except Exception as exc:  # noqa: BLE001 - one broken step must not hide the others' results
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        result = {"name": step.name, "planned_s": round(step.est_s), "wall_s": round(time.perf_counter() - t0, 1),
                  **result}
        failed |= result.get("ok") is False
        record["steps"].append(result)
        record["wall_s"] = round(time.perf_counter() - started, 1)
        atomic_write_json(args.out / "gpu_check.json", record)
        print(f"   {step.name}: {'FAILED ' if result.get('ok') is False else ''}{result['wall_s']} s", flush=True)
    print(f"gpu_check {'FAILED' if failed else 'passed'} in {record['wall_s'] / 60:.1f} min; see {args.out}/gpu_check.json")
    return 1 if failed else 0


def _user_error(err: Exception) -> int:
    print(f"error: {err}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
