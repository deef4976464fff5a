"""Run benchmark suites and regenerate ``benchmarks/results/SUMMARY.md``.

    python -m benchmarks [SUITE ...] [--quick] [--profile DIR] [--out DIR] [--summary]

With no SUITE, every suite that can run on this machine runs (CUDA-only suites are skipped with one
line saying why). Each suite runs baseline and ours side by side in its own process, in the
environment it needs: train-env suites with this interpreter, ``synth`` with ``.venv-synth`` when vLLM
is not importable here. ``--summary`` only regenerates SUMMARY.md from the results files.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ipt_engine.bench_options import add_bench_arguments

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


@dataclass(frozen=True)
class Suite:
    name: str
    module: str
    what: str
    env: str = "train"  # "train" (.venv) or "synth" (.venv-synth)
    cuda_only: bool = False
    out_flag: str = "--out-dir"
    profiles: bool = False  # supports --profile DIR


SUITES: dict[str, Suite] = {s.name: s for s in (
    Suite("attention", "benchmarks.attention", "packed attention kernels vs SDPA / FlexAttention / flash-attn",
          cuda_only=True, out_flag="--out", profiles=True),
    Suite("train", "benchmarks.train", "packed training steps vs padding each document", profiles=True),
    Suite("loader", "benchmarks.loader", "our packed input path vs a bare StreamingDataset", profiles=True),
    Suite("convert", "benchmarks.convert", "ipt convert vs a batched fast-tokenizer + MDSWriter loop"),
    Suite("templify", "benchmarks.templify", "templify throughput (no installable baseline)"),
    Suite("synth", "benchmarks.synth", "ipt synthesize vs the paper's procedure and plain LLM.generate",
          env="synth", profiles=True),
)}


def synth_python() -> str | None:
    """The interpreter that can import vLLM: this one, or the synth env's."""
    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    candidate = ROOT / ".venv-synth" / "bin" / "python"
    return str(candidate) if candidate.exists() else None


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def suite_command(suite: Suite, *, quick: bool, out: Path, profile: Path | None) -> list[str] | str:
    """The command that runs ``suite``, or a one-line reason it cannot run here."""
    python: str | None = sys.executable
    if suite.env == "synth":
        python = synth_python()
    if python is None:
        return "needs vLLM: not importable here and no .venv-synth (scripts/setup.sh synth builds it)"
    if suite.cuda_only and not cuda_available():
        return "needs a CUDA GPU (its kernels and baselines are GPU kernels); none here"
    cmd = [python, "-m", suite.module, suite.out_flag, str(out)]
    if quick:
        cmd.append("--quick")
    if profile is not None and suite.profiles:
        cmd += ["--profile", str(profile / suite.name)]
    return cmd


def run_suites(names: list[str], *, quick: bool, out: Path, profile: Path | None) -> list[tuple[str, str, float]]:
    """Run each suite in its own process; return (suite, outcome, seconds) per suite."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    outcomes = []
    for name in names:
        suite = SUITES[name]
        cmd = suite_command(suite, quick=quick, out=out, profile=profile)
        if isinstance(cmd, str):
            print(f"[bench] skip {name}: {cmd}", flush=True)
            outcomes.append((name, f"skipped: {cmd}", 0.0))
            continue
        print(f"[bench] {name}: {suite.what}{' (quick)' if quick else ''}", flush=True)
        t = time.perf_counter()
        rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
        outcomes.append((name, "ok" if rc == 0 else f"failed (exit {rc})", time.perf_counter() - t))
    return outcomes


def draw_missing_plots(out: Path, *, since: float) -> list[Path]:
    """The generic ratio chart beside each results file written since ``since`` that has no newer PNG."""
    from benchmarks.plots import plot_results
    from benchmarks.schema import results_files

    drawn = []
    for f in results_files(out):
        png = f.with_suffix(".png")
        if f.stat().st_mtime < since or (png.exists() and png.stat().st_mtime >= since):
            continue
        made = plot_results(f)
        if made is not None:
            drawn.append(made)
            print(f"[bench] plot: {made}")
    return drawn


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                               formatter_class=argparse.RawDescriptionHelpFormatter)
    add_bench_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args)


def run(args: argparse.Namespace) -> int:
    from benchmarks.summary import write_summary

    unknown = [s for s in args.suites if s not in SUITES]
    if unknown:
        print(f"unknown suite(s) {', '.join(unknown)}; choose from {', '.join(SUITES)}", file=sys.stderr)
        return 2
    out = (args.out or RESULTS).resolve()
    out.mkdir(parents=True, exist_ok=True)
    failed = False
    if not args.summary:
        names = args.suites or list(SUITES)
        profile = args.profile.resolve() if args.profile else None
        started = time.time()
        outcomes = run_suites(names, quick=args.quick, out=out, profile=profile)
        draw_missing_plots(out, since=started)
        print("[bench] done:")
        for name, outcome, seconds in outcomes:
            print(f"  {name:10s} {outcome}{f'  ({seconds:.0f} s)' if seconds else ''}")
        failed = any(o.startswith("failed") for _, o, _ in outcomes)
    print(f"[bench] summary: {write_summary(out)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
