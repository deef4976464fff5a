"""The paper's comparison as one run: vanilla pre-training against instruction pre-training.

Two models start from the same initialization (same config and seed) and train for the same number of
batches of the same size — the same token budget — one on the raw stream alone, one on raw and
augmented streams mixed at the configured proportions. Both report held-out loss per stream while
training and are then evaluated on the same tasks; the comparison table and a loss-curve plot with
both runs are written beside them. ``ipt pipeline --compare`` drives it on the embedded corpus.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ipt_engine.errors import UserError


def read_metrics(path: str | Path) -> dict[str, dict[int, float]]:
    """``metric -> {step: value}`` from a run's ``metrics.jsonl`` (a resumed run's later value wins)."""
    out: dict[str, dict[int, float]] = {}
    for line in Path(path).read_text().splitlines():
        rec = json.loads(line)
        step = rec.get("step")
        for key, value in rec.items():
            if key != "step" and isinstance(value, (int, float)):
                out.setdefault(key, {})[int(step)] = float(value)
    return out


def plot_loss_curves(runs: dict[str, str | Path], png: str | Path, title: str = "") -> Path:
    """Training loss (left) and held-out loss per stream (right) against the step, one colour per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    styles = ["-", "--", ":", "-."]
    for i, (name, path) in enumerate(runs.items()):
        metrics = read_metrics(path)
        colour = f"C{i}"
        train = metrics.get("loss/train/total", {})
        if train:
            steps = sorted(train)
            left.plot([s + 1 for s in steps], [train[s] for s in steps], color=colour, label=name)
        streams = sorted(k.split("/")[1] for k in metrics if k.startswith("metrics/") and k.endswith("/LanguageCrossEntropy"))
        for j, stream in enumerate(streams):
            series = metrics[f"metrics/{stream}/LanguageCrossEntropy"]
            steps = sorted(series)
            right.plot(steps, [series[s] for s in steps], color=colour, linestyle=styles[j % len(styles)],
                       marker="o", markersize=3, label=f"{name}: {stream}")
    left.set(xlabel="batch", ylabel="training loss", title="training loss")
    right.set(xlabel="batch", ylabel="cross-entropy per token", title="held-out loss per stream")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def final_heldout(path: str | Path) -> dict[str, float]:
    """The last logged held-out loss of each stream of a run."""
    out = {}
    for key, series in read_metrics(path).items():
        if key.startswith("metrics/") and key.endswith("/LanguageCrossEntropy") and series:
            out[key.split("/")[1]] = series[max(series)]
    return out


def heldout_table(runs: Mapping[str, str | Path]) -> str:
    """``| stream | run A | run B | B − A |`` of the final held-out losses (markdown)."""
    finals = {name: final_heldout(path) for name, path in runs.items()}
    names = list(runs)
    streams = sorted({s for f in finals.values() for s in f})
    head = "| held-out stream | " + " | ".join(names) + (f" | {names[1]} − {names[0]} |" if len(names) == 2 else " |")
    lines = [head, "|---|" + "---:|" * (len(names) + (1 if len(names) == 2 else 0))]
    for s in streams:
        vals = [finals[n].get(s) for n in names]
        cells = ["—" if v is None else f"{v:.4f}" for v in vals]
        if len(names) == 2:
            first, second = vals
            cells.append("—" if first is None or second is None else f"{second - first:+.4f}")
        lines.append(f"| {s} (loss) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def train_run(config: str | Path, overrides: Sequence[str], log: Path) -> None:
    """One training run in its own process (each holds its own Streaming datasets), output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, "-m", "ipt_engine.train", str(config), *overrides],
                              stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        tail = log.read_text().strip().splitlines()[-1:] or ["?"]
        raise UserError(f"training run failed (exit {proc.returncode}, log {log}): {tail[0]}")


def eval_run(model: Path, tasks: Sequence[str], data: Path, out: Path, log: Path, *, limit: int | None = None) -> Any:
    """``ipt eval`` in its own process; return the result record."""
    from ipt_engine.eval.harness import load_result

    cmd = [sys.executable, "-m", "ipt_engine", "eval", str(model), "--tasks", ",".join(tasks), "--data", str(data),
           "-o", str(out)]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        tail = log.read_text().strip().splitlines()[-1:] or ["?"]
        raise UserError(f"ipt eval failed (exit {proc.returncode}, log {log}): {tail[0]}")
    return load_result(out)
