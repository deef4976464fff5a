"""One picture per results file: each measure's ratio (ours / baseline, > 1 better) as a bar.

Suites with a picture of their own (attention's TFLOP/s curves, synthesis's throughput per engine)
keep it; for the others the harness draws this one beside the JSON (``<results>.png``), so every suite
has a plot a reader can take in at a glance. The bars' whiskers are the ratio range the repeats allow
(worst baseline against worst ours, best against best), read from each row's ``spread``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _ratio_range(c: dict[str, Any]) -> tuple[float, float] | None:
    sp = c.get("spread") or {}
    b, o = sp.get("baseline"), sp.get("ours")
    if not b or not o or min(b + o) <= 0:
        return None
    if c.get("higher_is_better", True):
        lo, hi = o[0] / b[1], o[1] / b[0]
    else:
        lo, hi = b[0] / o[1], b[1] / o[0]
    return lo, hi


def _plot_absolute(doc: dict[str, Any], path: Path, plt: Any) -> Path | None:
    """A suite without an installable baseline: each measure's own value, with its repeats' range."""
    cases = doc.get("cases", [])
    if not cases:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(cases) + 1.4))
    values = [c["ours"] for c in cases]
    errs = [[0.0] * len(cases), [0.0] * len(cases)]
    for i, c in enumerate(cases):
        r = (c.get("spread") or {}).get("ours")
        if r:
            errs[0][i], errs[1][i] = max(0.0, values[i] - r[0]), max(0.0, r[1] - values[i])
    ax.barh(range(len(cases)), values, xerr=errs, color="tab:blue", alpha=0.8, capsize=3)
    ax.set_yticks(range(len(cases)), [f"{c['name']} ({c['unit']})" for c in cases], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ours (no installable baseline); whiskers: range over repeats")
    machine = doc.get("env", {}).get("gpu") or doc.get("env", {}).get("cpu", "")
    ax.set_title(f"{doc.get('suite')} — {machine}, {str(doc.get('timestamp', ''))[:10]}", fontsize=10)
    fig.tight_layout()
    out = path.with_suffix(".png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_results(path: str | Path) -> Path | None:
    """Draw ``path``'s ratios into ``path`` with ``.png`` (each measure's value where no case has a
    baseline); None for a file without cases."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    doc = json.loads(path.read_text(encoding="utf-8"))
    cases = [c for c in doc.get("cases", []) if c.get("ratio")]
    if not cases:
        return _plot_absolute(doc, path, plt)
    names = [c["name"] if len(c["name"]) <= 60 else c["name"][:57] + "..." for c in cases]
    ratios = [c["ratio"] for c in cases]
    errs = [[0.0] * len(cases), [0.0] * len(cases)]
    for i, c in enumerate(cases):
        r = _ratio_range(c)
        if r is not None:
            errs[0][i], errs[1][i] = max(0.0, ratios[i] - r[0]), max(0.0, r[1] - ratios[i])
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(cases) + 1.4))
    colors = ["tab:green" if r >= 1 else "tab:red" for r in ratios]
    ax.barh(range(len(cases)), ratios, xerr=errs, color=colors, alpha=0.8, capsize=3)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(range(len(cases)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ratio, ours vs baseline (> 1: ours better); whiskers: range over repeats")
    machine = doc.get("env", {}).get("gpu") or doc.get("env", {}).get("cpu", "")
    ax.set_title(f"{doc.get('suite')} — {machine}, {str(doc.get('timestamp', ''))[:10]}", fontsize=10)
    fig.tight_layout()
    out = path.with_suffix(".png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
