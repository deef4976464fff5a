"""Markdown tables of ``ipt eval`` results, and the side-by-side comparison of two runs.

The standard error of a difference is paired when both result files hold per-document values of the
metric for the same documents (the same task file): ``sd(b_i - a_i) / sqrt(n)``, which removes the
variance the two models share through item difficulty. Otherwise the two runs are taken as
independent: ``sqrt(se_a² + se_b²)``. Metrics lm-eval reports without a standard error (perplexities)
show none.
"""

from __future__ import annotations

import math
from typing import Any


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def result_table(result: dict[str, Any]) -> str:
    """``| task | metric | value | stderr | n |`` for one result file."""
    lines = [f"model: `{result.get('model')}`", "", "| task | metric | value | stderr | n |", "|---|---|---:|---:|---:|"]
    for task, res in sorted(result["tasks"].items()):
        for name, m in res["metrics"].items():
            lines.append(f"| {task} | {name} | {_fmt(m['value'])} | {_fmt(m.get('stderr'))} | {res.get('n') or '—'} |")
    return "\n".join(lines)


def paired_stderr(a: list[list[float]], b: list[list[float]]) -> float | None:
    """Standard error of the mean of ``b_i - a_i`` over the same documents, or None when the two runs
    did not score the same documents (or fewer than two)."""
    if len(a) != len(b) or len(a) < 2 or [d for d, _ in a] != [d for d, _ in b]:
        return None
    diffs = [vb - va for (_, va), (_, vb) in zip(a, b)]
    mean = sum(diffs) / len(diffs)
    var = sum((x - mean) ** 2 for x in diffs) / (len(diffs) - 1)
    return math.sqrt(var / len(diffs))


def diff_stderr(task_a: dict[str, Any], task_b: dict[str, Any], metric: str) -> tuple[float | None, str]:
    """``(standard error of B - A, "paired" | "independent" | "")`` for one metric of one task."""
    pa, pb = task_a.get("per_doc", {}).get(metric), task_b.get("per_doc", {}).get(metric)
    if pa and pb:
        se = paired_stderr(pa, pb)
        if se is not None:
            return se, "paired"
    sa, sb = task_a["metrics"][metric].get("stderr"), task_b["metrics"][metric].get("stderr")
    if sa is None or sb is None:
        return None, ""
    return math.sqrt(sa * sa + sb * sb), "independent"


def compare_table(a: dict[str, Any], b: dict[str, Any], names: tuple[str, str] = ("A", "B")) -> str:
    """Both runs side by side per task and metric, with ``B − A`` and its standard error."""
    na, nb = names
    lines = [f"{na}: `{a.get('model')}`", f"{nb}: `{b.get('model')}`", "",
             f"| task | metric | {na} | {nb} | {nb} − {na} | stderr | |", "|---|---|---:|---:|---:|---:|---|"]
    for task in sorted(set(a["tasks"]) | set(b["tasks"])):
        ta, tb = a["tasks"].get(task), b["tasks"].get(task)
        metrics = list((ta or tb)["metrics"])
        for name in metrics:
            va = ta["metrics"][name]["value"] if ta and name in ta["metrics"] else None
            vb = tb["metrics"][name]["value"] if tb and name in tb["metrics"] else None
            diff = vb - va if va is not None and vb is not None else None
            se, kind = diff_stderr(ta, tb, name) if diff is not None else (None, "")
            cells = [task, name, _fmt(va), _fmt(vb), "—" if diff is None else f"{diff:+.4f}", _fmt(se), kind]
            lines.append("| " + " | ".join(cells).rstrip() + " |")
    return "\n".join(lines)
