"""Ahead-of-time compilation of the packed-attention kernels for CUDA targets, on a machine without a GPU.

Triton compiles a kernel for any ``GPUTarget`` without a driver: Python -> TTIR -> TTGIR -> LLVM -> PTX,
then the ``ptxas`` bundled in the Triton wheel turns the PTX into a cubin. That is the whole compiler a
GPU run would use, so a config that fails, spills or asks for more shared memory than the target has
fails here in the same way. For every kernel x autotune config x head dim x dtype x target this module
records:

* ``regs``, ``spill_bytes`` (spill stores + spill loads) from ``ptxas -v`` on the kernel's PTX (Triton
  discards that log, and the driver-side ``n_regs`` / ``n_spills`` are only filled in on a GPU);
* ``shared_bytes``: the dynamic shared memory the launch requests (Triton's ``metadata.shared``);
* ``mma``: the tensor-core instruction family the PTX uses (``wgmma`` on sm_90, ``mma.sync`` on sm_80),
  or ``None`` when it has none.

The kernels must be real ``triton.jit`` functions, so ``TRITON_INTERPRET`` must not be ``1`` in the
process that imports them; callers under the interpreter run this module in a subprocess.

    python -m ipt_engine.kernels.aot --space pruned --dtype bfloat16 --json out.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .autotune_configs import SHARED_LIMIT_BYTES

TARGETS = {"sm90": 90, "sm80": 80}  # H100 (wgmma), A100 (mma.sync)
HEAD_DIMS = (64, 128)
DTYPES = {"float16": "fp16", "bfloat16": "bf16"}
KERNELS = ("fwd", "bwd_dkdv", "bwd_dq", "bwd_preprocess")
# PTX mnemonic of the tensor-core MMA each target is expected to use.
MMA_PATTERNS = {"wgmma": re.compile(r"\bwgmma\.mma_async"), "mma.sync": re.compile(r"\bmma\.sync\.aligned")}
EXPECTED_MMA = {90: "wgmma", 80: "mma.sync"}
# Preprocess: fixed launch (BLOCK_T tokens per program; Triton's default warps and stages).
PREPROCESS_CONFIG = {"BLOCK_T": 64, "num_warps": 4, "num_stages": 3}


@dataclass(frozen=True)
class Job:
    """One compilation: a kernel variant at one config, head dim, dtype and target."""

    kernel: str
    variant: str
    config: dict
    head_dim: int
    dtype: str
    target: str


def _kernels():
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise RuntimeError("ahead-of-time compilation needs real triton.jit kernels: unset TRITON_INTERPRET "
                           "(or run `python -m ipt_engine.kernels.aot` in a subprocess without it)")
    import importlib

    # The package re-exports a function of the same name, so import the module by its full name.
    return importlib.import_module(f"{__package__}.packed_attention")


def _jit(fn):
    """The plain JITFunction under an autotuner (present when a GPU is visible)."""
    from triton.runtime.jit import JITFunction

    while not isinstance(fn, JITFunction):
        fn = fn.fn
    return fn


# (name, constexprs) per kernel variant: what the launchers pass. Every variant is causal (training's
# only mode) with GQA 4 except where the variant says otherwise.
def _variants(kernel: str) -> dict[str, dict]:
    if kernel == "fwd":
        return {"causal/gqa4": {"GROUPS": 4, "CAUSAL": True, "TRACE": False}}
    if kernel == "bwd_dkdv":
        return {
            # GQA, deterministic=False (the default): fp32 atomics into dK/dV.
            "causal/gqa4/atomic": {"GROUPS": 4, "ATOMIC": True, "CAUSAL": True},
            # GQA, deterministic=True: plain stores into per-q-head fp32 slots.
            "causal/gqa4/deterministic": {"GROUPS": 4, "ATOMIC": False, "CAUSAL": True},
            # Hq == Hkv: plain stores of dK/dV in the input dtype.
            "causal/mha": {"GROUPS": 1, "ATOMIC": False, "CAUSAL": True},
        }
    if kernel == "bwd_dq":
        return {"causal/gqa4": {"GROUPS": 4, "CAUSAL": True}}
    if kernel == "bwd_preprocess":
        return {"all": {}}
    raise ValueError(f"unknown kernel {kernel!r}; one of {KERNELS}")


def configs(kernel: str, space: str, head_dim: int, capability: int) -> list[dict]:
    """Launch configs of ``kernel``: the autotuner's full space, or the pruned one it offers."""
    if kernel == "bwd_preprocess":
        return [dict(PREPROCESS_CONFIG)]
    from .autotune_configs import PLAN_BLOCKS, autotune_space, config_key, offered_configs, plan_block

    out = []
    offered = offered_configs(kernel, head_dim, capability) if space == "pruned" else None
    plan = {PLAN_BLOCKS[kernel]: plan_block(kernel, head_dim, capability)}  # the launcher's, per target
    for config in autotune_space(kernel):
        if offered is not None and config_key(config) not in offered:
            continue
        out.append({**plan, **config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages})
    return out


def jobs(kernels: Iterable[str] = KERNELS, *, space: str = "full", head_dims: Iterable[int] = HEAD_DIMS,
         dtypes: Iterable[str] = ("bfloat16",), targets: Iterable[str] = tuple(TARGETS)) -> list[Job]:
    out = []
    for dtype in dtypes:
        for target in targets:
            for kernel in kernels:
                for head_dim in head_dims:
                    for variant in _variants(kernel):
                        for config in configs(kernel, space, head_dim, TARGETS[target]):
                            out.append(Job(kernel, variant, config, head_dim, dtype, target))
    return out


def _source(job: Job):
    """``ASTSource`` with the signature, constexprs and alignment a real launch would specialize to."""
    from triton.compiler import ASTSource

    pa = _kernels()
    elem = DTYPES[job.dtype]
    constexprs = dict(_variants(job.kernel)[job.variant])
    blocks = {k: v for k, v in job.config.items() if k not in ("num_warps", "num_stages")}  # plan + tuned
    constexprs.update(blocks)
    constexprs["HEAD_DIM"] = job.head_dim
    if job.kernel == "bwd_preprocess":
        fn = pa._attn_bwd_preprocess_kernel
    else:
        constexprs["INPUT_PRECISION"] = None  # fp16/bf16: tl.dot's default (tensor cores)
        if job.kernel == "fwd":
            fn = pa._packed_attn_fwd_kernel
            constexprs["trace_stride_p"] = 1  # untraced launches pass a (1, 1) buffer: Triton folds 1
        elif job.kernel == "bwd_dkdv":
            fn = pa._packed_attn_bwd_dkdv_kernel
        else:
            fn = pa._packed_attn_bwd_dq_kernel
    fn = _jit(fn)
    # dK/dV are fp32 under atomics and in deterministic GQA's per-q-head slots; else the input dtype.
    fp32_grads = constexprs.get("ATOMIC", False) or constexprs.get("GROUPS", 1) > 1
    signature, attrs = {}, {}
    for index, arg in enumerate(fn.arg_names):
        if arg in constexprs:
            signature[arg] = "constexpr"
            continue
        if arg.endswith("_ptr"):
            base = arg[: -len("_ptr")]
            if base in ("lse", "delta"):
                signature[arg] = "*fp32"
            elif base in ("cu_seqlens", "plan", "trace"):
                signature[arg] = "*i32"
            elif base in ("dk", "dv") and fp32_grads:
                signature[arg] = "*fp32"
            else:
                signature[arg] = f"*{elem}"
            attrs[(index,)] = [["tt.divisibility", 16]]  # torch allocations are 16-byte aligned
        elif arg in ("qk_scale", "sm_scale"):
            signature[arg] = "fp32"
        else:
            signature[arg] = "i32"
            # (token, head) strides are multiples of head_dim >= 16; per-head stats strides are `total`.
            if arg.endswith(("_stride_t", "_stride_h")) and not arg.startswith(("lse", "delta", "stat")):
                attrs[(index,)] = [["tt.divisibility", 16]]
    return ASTSource(fn, signature, constexprs=constexprs, attrs=attrs)


def _ptxas_resources(ptx: str, capability: int, cache_dir: Path | None) -> dict:
    """Registers and spill bytes from the bundled ptxas's ``-v`` report on ``ptx`` (cached by PTX hash)."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    arch = sm_arch_from_capability(capability)
    digest = hashlib.sha256(f"{arch}\n{ptx}".encode()).hexdigest()
    cached = cache_dir / "ptxas-v" / f"{digest}.json" if cache_dir else None
    if cached and cached.exists():
        return json.loads(cached.read_text())
    ptxas, _ = get_ptxas(capability)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "kernel.ptx"
        src.write_text(ptx)
        # Same flags as Triton's own cubin step (-lineinfo, -v); the cubin itself is thrown away.
        log = subprocess.run([ptxas, "-lineinfo", "-v", f"--gpu-name={arch}", str(src), "-o", str(src) + ".o"],
                             check=True, capture_output=True, text=True).stderr
    regs = re.search(r"Used (\d+) registers", log)
    stores = re.search(r"(\d+) bytes spill stores", log)
    loads = re.search(r"(\d+) bytes spill loads", log)
    stack = re.search(r"(\d+) bytes stack frame", log)
    if not (regs and stores and loads):
        raise RuntimeError(f"unexpected ptxas -v report for {arch}:\n{log}")
    out = {"regs": int(regs.group(1)), "spill_stores": int(stores.group(1)), "spill_loads": int(loads.group(1)),
           "stack_bytes": int(stack.group(1)) if stack else 0}
    if cached:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = cached.with_name(f".{cached.name}.{os.getpid()}")
        tmp_path.write_text(json.dumps(out))
        os.replace(tmp_path, cached)
    return out


def detect_mma(ptx: str) -> str | None:
    """Tensor-core MMA family the PTX uses: ``"wgmma"``, ``"mma.sync"``, or ``None``."""
    for name, pattern in MMA_PATTERNS.items():
        if pattern.search(ptx):
            return name
    return None


def compile_job(job: Job) -> dict:
    """Compile one job for its target and return its row (``error`` set instead when it fails)."""
    import triton
    from triton.backends.compiler import GPUTarget

    capability = TARGETS[job.target]
    cache = os.environ.get("TRITON_CACHE_DIR")
    row = {"kernel": job.kernel, "variant": job.variant, "config": job.config, "head_dim": job.head_dim,
           "dtype": job.dtype, "target": job.target}
    start = time.perf_counter()
    try:
        compiled = triton.compile(_source(job), target=GPUTarget("cuda", capability, 32),
                                  options={"num_warps": job.config["num_warps"],
                                           "num_stages": job.config["num_stages"]})
        ptx = compiled.asm["ptx"]
        resources = _ptxas_resources(ptx, capability, Path(cache).parent if cache else None)
    except Exception as exc:  # noqa: BLE001 - a failing config is a result, recorded with its reason
        row.update(error=f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}",
                   compile_s=round(time.perf_counter() - start, 2))
        return row
    shared = int(compiled.metadata.shared)
    spill = resources["spill_stores"] + resources["spill_loads"]
    mma = detect_mma(ptx)
    row.update(
        regs=resources["regs"], spill_bytes=spill, spill_stores=resources["spill_stores"],
        spill_loads=resources["spill_loads"], stack_bytes=resources["stack_bytes"], shared_bytes=shared,
        shared_limit_bytes=SHARED_LIMIT_BYTES[capability], mma=mma,
        cp_async="cp.async" in ptx, compile_s=round(time.perf_counter() - start, 2),
    )
    row["ok"] = row_ok(row)
    return row


def uses_dot(kernel: str) -> bool:
    return kernel != "bwd_preprocess"


def row_ok(row: dict) -> bool:
    """Fit for a GPU: compiled, nothing spilled, shared memory within the target, tensor cores used."""
    if row.get("error"):
        return False
    mma_ok = (not uses_dot(row["kernel"])) or row["mma"] == EXPECTED_MMA[TARGETS[row["target"]]]
    return row["spill_bytes"] == 0 and row["shared_bytes"] <= row["shared_limit_bytes"] and mma_ok


def default_cache_dir() -> Path:
    """Triton cache of the AOT builds, kept between runs: ``<repo>/.cache/triton-aot`` (git-ignored) in
    a checkout, else the user cache."""
    repo = Path(__file__).resolve().parent.parent
    root = repo / ".cache" if (repo / "pyproject.toml").exists() else Path.home() / ".cache" / "ipt-engine"
    return root / "triton-aot" / "triton"


def _init_worker(cache_dir: str) -> None:
    os.environ["TRITON_CACHE_DIR"] = cache_dir
    os.environ.pop("TRITON_INTERPRET", None)


def run(job_list: list[Job], *, workers: int = 1, cache_dir: Path | None = None) -> Iterator[dict]:
    """Compile every job (in ``workers`` processes) and yield rows as they finish, in job order."""
    cache_dir = cache_dir or default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    if workers <= 1:
        _init_worker(str(cache_dir))
        yield from map(compile_job, job_list)
        return
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(str(cache_dir),)) as pool:
        yield from pool.map(compile_job, job_list)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compile the packed-attention kernels ahead of time for "
                                     "sm_90 / sm_80 and report registers, spills, shared memory and MMA use.")
    parser.add_argument("--space", choices=("full", "pruned"), default="pruned",
                        help="the autotuner's full config space, or the pruned one it offers (default)")
    parser.add_argument("--dtype", action="append", choices=tuple(DTYPES), help="repeatable; default bfloat16")
    parser.add_argument("--target", action="append", choices=tuple(TARGETS), help="repeatable; default both")
    parser.add_argument("--kernel", action="append", choices=KERNELS, help="repeatable; default all")
    parser.add_argument("--head-dim", action="append", type=int, choices=HEAD_DIMS, help="repeatable")
    parser.add_argument("--workers", type=int, default=1, help="compile processes (default 1)")
    parser.add_argument("--json", type=Path, help="write the rows here (a JSON list)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help=f"Triton cache for these builds (default {default_cache_dir()})")
    args = parser.parse_args(argv)
    try:
        _kernels()
    except RuntimeError as exc:  # TRITON_INTERPRET=1: a usage problem, one line and exit 2
        print(f"error: {exc}", file=sys.stderr)
        return 2
    job_list = jobs(args.kernel or KERNELS, space=args.space, head_dims=args.head_dim or HEAD_DIMS,
                    dtypes=args.dtype or ("bfloat16",), targets=args.target or tuple(TARGETS))
    rows = []
    for row in run(job_list, workers=args.workers, cache_dir=args.cache_dir):
        rows.append(row)
        status = row.get("error") or (f"regs {row['regs']:3d} spill {row['spill_bytes']:5d} B "
                                      f"shared {row['shared_bytes'] // 1024:3d} KiB mma {row['mma']}")
        print(f"[{len(rows)}/{len(job_list)}] {row['target']} {row['kernel']:14s} {row['variant']:20s} "
              f"D{row['head_dim']} {row['dtype']} {row['config']}: {status}", flush=True)
    if args.json:
        from ipt_engine.io.atomic import atomic_write_json

        atomic_write_json(args.json, rows)
    bad = [r for r in rows if not r.get("ok")]
    print(f"{len(rows) - len(bad)}/{len(rows)} configs fit their target", flush=True)
    return 1 if bad and args.space == "pruned" else 0


if __name__ == "__main__":
    sys.exit(main())
