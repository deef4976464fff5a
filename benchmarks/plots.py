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


def _bars(doc: dict[str, Any], path: Path, labels: list[str], values: list[float],
          ranges: list[tuple[float, float] | None], *, ratio: bool) -> Path:
    """Horizontal bars with whiskers over ``ranges``, titled by suite, machine and date; ``path`` → PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    errs = [[0.0] * len(values), [0.0] * len(values)]
    for i, r in enumerate(ranges):
        if r is not None:
            errs[0][i], errs[1][i] = max(0.0, values[i] - r[0]), max(0.0, r[1] - values[i])
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(values) + 1.4))
    colors = ["tab:green" if v >= 1 else "tab:red" for v in values] if ratio else "tab:blue"
    ax.barh(range(len(values)), values, xerr=errs, color=colors, alpha=0.8, capsize=3)
    if ratio:
        ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(range(len(values)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(("ratio, ours vs baseline (> 1: ours better)" if ratio else "ours (no installable baseline)")
                  + "; whiskers: range over repeats")
    machine = doc.get("env", {}).get("gpu") or doc.get("env", {}).get("cpu", "")
    ax.set_title(f"{doc.get('suite')} — {machine}, {str(doc.get('timestamp', ''))[:10]}", fontsize=10)
    return save_beside(fig, path, dpi=110)


def save_beside(fig: Any, results_json: str | Path, *, dpi: int = 120) -> Path:
    """Lay out ``fig``, write it as the PNG beside ``results_json`` (same name) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(results_json).with_suffix(".png")
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def plot_results(path: str | Path) -> Path | None:
    """Draw ``path``'s ratios into ``path`` with ``.png`` (each measure's own value where no case has a
    baseline); None for a file without cases."""
    path = Path(path)
    doc = json.loads(path.read_text(encoding="utf-8"))
    cases = [c for c in doc.get("cases", []) if c.get("ratio")]
    if cases:
        names = [c["name"] if len(c["name"]) <= 60 else c["name"][:57] + "..." for c in cases]
        return _bars(doc, path, names, [c["ratio"] for c in cases], [_ratio_range(c) for c in cases], ratio=True)
    cases = doc.get("cases", [])
    if not cases:
        return None
    ranges = [tuple(r) if (r := (c.get("spread") or {}).get("ours")) else None for c in cases]
    return _bars(doc, path, [f"{c['name']} ({c['unit']})" for c in cases], [c["ours"] for c in cases], ranges,
                 ratio=False)
