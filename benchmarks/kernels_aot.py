"""Ahead-of-time resource sweep of the packed-attention kernels for sm_90 (H100) and sm_80 (A100), on CPU.

    python -m benchmarks.kernels_aot                      # full autotune space, bf16, both targets
    python -m benchmarks.kernels_aot --dtype float16      # add fp16 rows to today's file
    python -m benchmarks.kernels_aot --table-only         # regenerate the docs table from the JSON

Compiles every kernel x autotune config x head dim (64, 128) x target with the Triton wheel's own
compiler and ptxas (see ``ipt_engine.kernels.aot``) and writes one row per kernel x config x target to
``benchmarks/results/kernels-aot-<YYYYMMDD>.json`` with ``regs``, ``spill_bytes``, ``shared_bytes``,
``mma`` and whether the pruned autotune space offers the config. The file is rewritten atomically
after every row, and a rerun skips the rows it already holds, so an interrupted sweep resumes. The
markdown table in ``docs/kernels.md`` (between its ``aot-table`` markers) is regenerated at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from benchmarks.common import RESULTS, commit, env_record

DOCS = Path(__file__).resolve().parent.parent / "docs" / "kernels.md"
TABLE_BEGIN, TABLE_END = "<!-- aot-table:begin -->", "<!-- aot-table:end -->"


def _identity(row: dict) -> tuple:
    return (row["kernel"], row["variant"], json.dumps(row["config"], sort_keys=True), row["head_dim"],
            row["dtype"], row["target"])


def results_path(day: str | None = None, out_dir: Path | None = None) -> Path:
    return (out_dir or RESULTS) / f"kernels-aot-{day or time.strftime('%Y%m%d')}.json"


def latest_results(out_dir: Path | None = None) -> Path | None:
    found = sorted((out_dir or RESULTS).glob("kernels-aot-*.json"))
    return found[-1] if found else None


def _offered(row: dict) -> bool:
    from ipt_engine.kernels.aot import TARGETS
    from ipt_engine.kernels.autotune_configs import TUNED_BLOCKS, offered_configs

    if row["kernel"] == "bwd_preprocess":
        return True
    name = TUNED_BLOCKS[row["kernel"]][0]
    key = (row["config"][name], row["config"]["num_warps"], row["config"]["num_stages"])
    return key in offered_configs(row["kernel"], row["head_dim"], TARGETS[row["target"]])


def _document(rows: list[dict]) -> dict:
    from ipt_engine.kernels import aot

    for row in rows:
        row["offered"] = _offered(row)
    rows.sort(key=lambda r: (r["target"], r["dtype"], aot.KERNELS.index(r["kernel"]), r["variant"],
                             r["head_dim"], sorted(r["config"].items())))
    return {
        "suite": "kernels-aot",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": commit(),
        "env": env_record(),
        "note": "Compiled ahead of time on CPU with the Triton wheel's ptxas; no kernel was run.",
        "summary": summary(rows),
        "rows": rows,
    }


def summary(rows: list[dict]) -> dict:
    """Counts per target, and whether fp16 and bf16 gave identical figures where both were compiled."""
    out: dict = {}
    for target in sorted({r["target"] for r in rows}):
        sel = [r for r in rows if r["target"] == target]
        out[target] = {
            "configs": len(sel),
            "fit": sum(bool(r.get("ok")) for r in sel),
            "spill": sum(r.get("spill_bytes", 0) > 0 for r in sel),
            "over_shared": sum(r.get("shared_bytes", 0) > r.get("shared_limit_bytes", 1 << 40) for r in sel),
            "errors": sum(bool(r.get("error")) for r in sel),
            "offered": sum(bool(r.get("offered")) for r in sel),
            "offered_not_fit": sum(bool(r.get("offered")) and not r.get("ok") for r in sel),
        }
    by_key: dict[tuple, dict[str, tuple]] = {}
    for r in rows:
        if r.get("error"):
            continue
        key = _identity(r)[:4] + (r["target"],)
        by_key.setdefault(key, {})[r["dtype"]] = (r["regs"], r["spill_bytes"], r["shared_bytes"], r["mma"])
    pairs = [v for v in by_key.values() if len(v) == 2]
    out["fp16_vs_bf16"] = {"compared": len(pairs), "identical": sum(len(set(v.values())) == 1 for v in pairs)}
    return out


def markdown_table(rows: list[dict]) -> str:
    """One line per kernel x variant x head dim x tuned config, both targets side by side (first dtype)."""
    from ipt_engine.kernels.autotune_configs import PLAN_BLOCKS

    dtype = sorted({r["dtype"] for r in rows})[0]
    cells: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        if r["dtype"] != dtype:
            continue
        plan = PLAN_BLOCKS.get(r["kernel"])
        cfg = ", ".join(f"{k}={v}" if not k.startswith("num_") else f"{k[4]}{v}"
                        for k, v in r["config"].items() if k != plan)
        cells.setdefault((r["kernel"], r["variant"], r["head_dim"], cfg), {})[r["target"]] = r

    def plan_of(r: dict | None) -> str:
        name = PLAN_BLOCKS.get(r["kernel"]) if r else None
        return f"{name}={r['config'][name]}" if name else "-"

    def fmt(r: dict | None) -> str:
        if r is None:
            return "- | - | - | - | - | -"
        if r.get("error"):
            return f"{plan_of(r)} | error | | | |"
        spill = f"**{r['spill_bytes']} B**" if r["spill_bytes"] else "0"
        shared = r["shared_bytes"] / 1024
        shared_s = f"**{shared:.0f}**" if r["shared_bytes"] > r["shared_limit_bytes"] else f"{shared:.0f}"
        return (f"{plan_of(r)} | {r['regs']} | {spill} | {shared_s} | {r['mma'] or '-'} | "
                f"{'yes' if r.get('offered') else 'no'}")

    summ = {**summary([r for r in rows if r["dtype"] == dtype]), "fp16_vs_bf16": summary(rows)["fp16_vs_bf16"]}
    lines = [
        f"Figures for {dtype}; per target: plan block, registers, spill bytes, shared KiB, MMA, offered to "
        "the autotuner. Bold: spills, or over the shared-memory limit.",
        "",
        *(f"- {t}: {c['configs']} configs compiled, {c['fit']} fit, {c['spill']} spill, {c['over_shared']} over "
          f"shared memory, {c['errors']} failed; {c['offered']} offered, {c['offered_not_fit']} offered but not fit"
          for t, c in summ.items() if t in ("sm90", "sm80")),
        f"- fp16 against bf16: {summ['fp16_vs_bf16']['identical']} of {summ['fp16_vs_bf16']['compared']} "
        "compiled pairs identical in registers, spills, shared memory and MMA",
        "",
        "| kernel | variant | D | config | sm_90 plan | regs | spill | shared | MMA | offered "
        "| sm_80 plan | regs | spill | shared | MMA | offered |",
        "|" + "---|" * 16,
    ]
    for (kernel, variant, head_dim, cfg), by_target in cells.items():
        lines.append(f"| {kernel} | {variant} | {head_dim} | {cfg} | {fmt(by_target.get('sm90'))} "
                     f"| {fmt(by_target.get('sm80'))} |")
    return "\n".join(lines)


def write_table(rows: list[dict], source: Path, docs: Path = DOCS) -> None:
    table = f"{TABLE_BEGIN}\n_Generated by `python -m benchmarks.kernels_aot` from `benchmarks/results/{source.name}`._\n\n"
    table += markdown_table(rows) + f"\n{TABLE_END}"
    text = docs.read_text() if docs.exists() else f"# Kernels\n\n{TABLE_BEGIN}\n{TABLE_END}\n"
    if TABLE_BEGIN not in text:
        text += f"\n{TABLE_BEGIN}\n{TABLE_END}\n"
    head, rest = text.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    from ipt_engine.io.atomic import atomic_write_bytes

    atomic_write_bytes(docs, (head + table + tail).encode("utf-8"))


def sweep(dtypes: Iterable[str], path: Path, workers: int) -> list[dict]:
    from ipt_engine.kernels import aot

    from ipt_engine.io.atomic import atomic_write_json

    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    done = {_identity(r) for r in rows}
    todo = [j for j in aot.jobs(space="full", dtypes=dtypes)
            if (j.kernel, j.variant, json.dumps(j.config, sort_keys=True), j.head_dim, j.dtype, j.target) not in done]
    print(f"{len(rows)} rows already in {path}; compiling {len(todo)} more with {workers} worker(s)", flush=True)
    start = time.perf_counter()
    for i, row in enumerate(aot.run(todo, workers=workers), 1):
        rows.append(row)
        atomic_write_json(path, _document(rows))  # after every row: an interrupted sweep resumes here
        status = row.get("error") or (f"regs {row['regs']:3d} spill {row['spill_bytes']:5d} B "
                                      f"shared {row['shared_bytes'] // 1024:3d} KiB mma {row['mma']}")
        eta = (time.perf_counter() - start) / i * (len(todo) - i)
        print(f"[{i}/{len(todo)} eta {eta / 60:.1f} min] {row['target']} {row['dtype']} {row['kernel']} "
              f"{row['variant']} D{row['head_dim']} {row['config']}: {status}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compile every packed-attention kernel config for sm_90 and "
                                     "sm_80 on CPU; write registers / spills / shared memory / MMA per row.")
    parser.add_argument("--dtype", action="append", choices=("bfloat16", "float16"),
                        help="repeatable; default bfloat16 (fp16 gives the same figures: see the summary)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="compile processes")
    parser.add_argument("--out", type=Path, default=None, help="results directory (default benchmarks/results)")
    parser.add_argument("--table-only", action="store_true", help="only regenerate the docs table")
    args = parser.parse_args(argv)
    os.environ.pop("TRITON_INTERPRET", None)  # the compiler needs real jit kernels

    if args.table_only:
        path = latest_results(args.out)
        if path is None:
            print("no kernels-aot results yet; run without --table-only first", file=sys.stderr)
            return 2
        rows = json.loads(path.read_text())["rows"]
    else:
        path = results_path(out_dir=args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = sweep(args.dtype or ["bfloat16"], path, args.workers)
    from ipt_engine.io.atomic import atomic_write_json

    doc = _document(rows)
    atomic_write_json(path, doc)
    write_table(doc["rows"], path)
    print(json.dumps(doc["summary"], indent=1))
    print(f"wrote {path} and the table in {DOCS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
