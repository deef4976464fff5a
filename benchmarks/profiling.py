"""Profiler output every suite writes the same way: a Chrome/Perfetto trace and a markdown table.

A suite wraps a few steady-state iterations in ``torch.profiler.profile`` (:func:`activities` picks CPU,
plus CUDA where a GPU is present) and hands the finished profiler to :func:`write_profile`, which writes

- ``<name>.trace.json``: the Chrome trace (``prof.export_chrome_trace``); open it at
  https://ui.perfetto.dev (or ``chrome://tracing``) to see every operator and kernel on a timeline;
- ``<name>.md``: the top-15 operators by self time (calls, total self ms, % of the total self time),
  CUDA kernels by device time when the profile holds any, CPU operators by CPU time otherwise (and as a
  second table on a GPU), and, with ``groups``, the time per group of operators.

Self time, not total time: a parent's total includes its children, so totals double-count and do not
add up; self times of all operators partition the profiled time, so percentages are shares of one
whole. ``groups`` maps a label ("attention", "matmul", "optimizer", "data wait") to operator-name
substrings (case-insensitive); each operator counts towards the first group it matches, everything
else goes to "other", so the group table adds up to 100 %.

Works with the train env's and the synth env's torch (2.7 and 2.13): the only attributes read are the
ones both versions' ``key_averages()`` rows carry, with fallbacks for the renamed CUDA ones.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

TOP = 15
_STEP = re.compile(r"^ProfilerStep(#\d+|\*)$")
STEP_LABEL = "ProfilerStep (untraced time inside steps)"


def activities() -> list[Any]:
    """CPU, plus CUDA when a GPU is available: what a suite passes to ``torch.profiler.profile``."""
    import torch
    from torch.profiler import ProfilerActivity

    acts = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        acts.append(ProfilerActivity.CUDA)
    return acts


def _device_self_us(e: Any) -> float:
    for attr in ("self_device_time_total", "self_cuda_time_total"):
        v = getattr(e, attr, None)
        if v is not None:
            return float(v)
    return 0.0


def _is_device_event(e: Any) -> bool:
    """A kernel / memcpy row (device side), as opposed to a CPU operator row."""
    kind = getattr(e, "device_type", None)
    return kind is not None and "CPU" not in str(kind)


def op_times(prof: Any, side: str) -> dict[str, dict[str, float]]:
    """``{op name: {"self_us", "calls"}}`` over the profile, for ``side`` "cpu" or "device".

    ``ProfilerStep#N`` rows (one per step when a schedule is used; torch 2.7 already merges them as
    ``ProfilerStep*``) become one row: their self time is the Python and framework time between traced operators, which is worth seeing as one line.
    """
    out: dict[str, dict[str, float]] = {}
    for e in prof.key_averages():
        if e.key == "[memory]":
            continue
        if side == "device":
            if not _is_device_event(e):
                continue
            us = _device_self_us(e)
        else:
            if _is_device_event(e):
                continue
            us = float(e.self_cpu_time_total)
        name = STEP_LABEL if _STEP.match(e.key) else e.key
        row = out.setdefault(name, {"self_us": 0.0, "calls": 0})
        row["self_us"] += us
        row["calls"] += int(e.count)
    return out


def group_times(ops: dict[str, dict[str, float]], groups: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    """Self time per group (first matching group wins; the rest is "other"), so the groups partition it."""
    lowered = {label: [s.lower() for s in subs] for label, subs in groups.items()}
    out = {label: {"self_us": 0.0, "ops": 0} for label in [*groups, "other"]}
    for name, row in ops.items():
        low = name.lower()
        label = next((g for g, subs in lowered.items() if any(s in low for s in subs)), "other")
        out[label]["self_us"] += row["self_us"]
        out[label]["ops"] += 1
    return out


def _table(ops: dict[str, dict[str, float]], title: str, steps: int | None) -> tuple[list[str], list[dict]]:
    total = sum(r["self_us"] for r in ops.values()) or 1.0
    top = sorted(ops.items(), key=lambda kv: kv[1]["self_us"], reverse=True)[:TOP]
    per_step = f" | self ms / step (of {steps})" if steps else ""
    lines = [f"### {title}", "", f"Total self time {total / 1e3:.2f} ms over {len(ops)} distinct operators.", "",
             f"| # | operator | calls | self ms{per_step} | % of total |",
             f"|---|---|---|---|{'---|' if steps else ''}---|"]
    rows = []
    for i, (name, r) in enumerate(top, 1):
        pct = 100.0 * r["self_us"] / total
        step_col = f" | {r['self_us'] / 1e3 / steps:.3f}" if steps else ""
        cell = name.replace("|", "\\|")
        if len(cell) > 90:
            cell = cell[:87] + "..."
        lines.append(f"| {i} | `{cell}` | {r['calls']} | {r['self_us'] / 1e3:.3f}{step_col} | {pct:.1f} |")
        rows.append({"op": name, "calls": int(r["calls"]), "self_ms": r["self_us"] / 1e3, "pct": pct})
    return lines + [""], rows


def write_profile(prof: Any, out_dir: Path, name: str, *, groups: dict[str, list[str]] | None = None,
                  steps: int | None = None) -> dict[str, Any]:
    """Write ``<name>.trace.json`` and ``<name>.md`` under ``out_dir``; return their paths and the figures.

    ``prof`` is a finished ``torch.profiler.profile``. ``steps`` (optional) is how many iterations it
    covered, for a per-step column. The returned dict (JSON-serializable, for a results file) holds
    ``trace``, ``table``, ``side`` ("device" or "cpu": what the top table ranks), ``total_ms``, ``top``
    (rows with op, calls, self_ms, pct) and, with ``groups``, ``groups`` ({label: {self_ms, pct, ops}}).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device_ops = op_times(prof, "device")
    cpu_ops = op_times(prof, "cpu")
    if not device_ops and not cpu_ops:
        raise ValueError(f"profile {name!r} holds no events: with a schedule, use repeat=1 (or write from "
                         "on_trace_ready) so the active steps are still there when it is written")
    trace = out_dir / f"{name}.trace.json"
    prof.export_chrome_trace(str(trace))
    side = "device" if sum(r["self_us"] for r in device_ops.values()) > 0 else "cpu"
    ops = device_ops if side == "device" else cpu_ops
    title = "CUDA kernels by self device time" if side == "device" else "CPU operators by self CPU time"
    lines = [f"# Profile: {name}", "",
             f"Trace: `{trace.name}` (open at https://ui.perfetto.dev or chrome://tracing). Self time: the "
             "time in an operator itself, not its children, so the rows partition the profiled time.", ""]
    body, top = _table(ops, f"Top {TOP} {title}", steps)
    lines += body
    if side == "device":
        lines += _table(cpu_ops, f"Top {TOP} CPU operators by self CPU time", steps)[0]
    result: dict[str, Any] = {"trace": str(trace), "table": str(out_dir / f"{name}.md"), "side": side,
                              "total_ms": sum(r["self_us"] for r in ops.values()) / 1e3, "top": top}
    if groups:
        g = group_times(ops, groups)
        total = sum(r["self_us"] for r in g.values()) or 1.0
        lines += [f"### Time per group ({'device' if side == 'device' else 'CPU'} self time)", "",
                  "| group | matches | self ms | % of total |", "|---|---|---|---|"]
        result["groups"] = {}
        for label, r in g.items():
            pct = 100.0 * r["self_us"] / total
            subs = ", ".join(f"`{s}`" for s in groups.get(label, [])) or "everything else"
            lines.append(f"| {label} | {subs} | {r['self_us'] / 1e3:.3f} | {pct:.1f} |")
            result["groups"][label] = {"self_ms": r["self_us"] / 1e3, "pct": pct, "ops": int(r["ops"])}
        lines.append("")
    Path(result["table"]).write_text("\n".join(lines), encoding="utf-8")
    return result
