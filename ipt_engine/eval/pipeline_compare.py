"""``ipt pipeline``'s evaluation steps: one model on the held-out tasks, or the raw-vs-augmented comparison.

Kept out of :mod:`ipt_engine.commands.pipeline` so that the command module stays a list of stages; the
comparison itself is :mod:`ipt_engine.eval.experiment`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ipt_engine.eval.data import DATA_FILES
from ipt_engine.examples import example_path

CONFIG = example_path("tiny-cpu.yaml")
RUNS = {"raw": "raw only", "ipt": "raw + augmented"}


def eval_override(streams: dict[str, str]) -> str:
    """The training config's ``eval`` section as an override: the held-out streams, or none."""
    return f"eval.streams={json.dumps(streams)}" if streams else "eval=null"


def split_synthesized(work: Path, synth: Path, corpus: Path, fraction: float) -> dict[str, Any]:
    """Held-out read collections (by each entry's context, the rule ``ipt convert --split`` applied to
    the raw documents), the held-out raw texts, and the evaluation data built from both."""
    from ipt_engine.data.split import is_heldout
    from ipt_engine.eval.data import build_eval_data, iter_texts, split_collections

    out = work / "synth-split"
    out.mkdir(parents=True, exist_ok=True)
    train, heldout = out / "train.jsonl", out / "heldout.jsonl"
    n_train, n_held = split_collections([synth], fraction, train, heldout)
    texts = out / "heldout-texts.jsonl"
    with open(texts, "w", encoding="utf-8") as f:
        for text in iter_texts([corpus]):
            if is_heldout(text, fraction):
                f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    counts = build_eval_data(work / "eval-data", collections=[heldout] if n_held else [], texts=[texts])
    print(f"      held out: {n_held} synthesized entries of {n_train + n_held}; evaluation data "
          + ", ".join(f"{k} {v}" for k, v in counts.items()) + f" -> {work / 'eval-data'}")
    return {"train": train, "heldout": heldout, "entries": n_held}


def runnable_tasks(tasks: list[str], data: Path) -> list[str]:
    """The tasks whose data the held-out split produced (a tiny demo may hold out no synthesized entry)."""
    out = []
    for t in tasks:
        f = DATA_FILES.get(t)
        if f is None or ((data / f).is_file() and (data / f).stat().st_size > 0):
            out.append(t)
        else:
            print(f"      {t}: no held-out items in {data / f}; skipped")
    return out


def evaluate_model(model: Path, tasks: list[str], work: Path, name: str) -> dict[str, Any] | None:
    """``ipt eval`` on ``model`` into ``work/eval/<name>.json``; print and return the result."""
    from ipt_engine.eval.experiment import eval_run
    from ipt_engine.eval.report import result_table

    tasks = runnable_tasks(tasks, work / "eval-data")
    if not tasks:
        return None
    out = work / "eval"
    out.mkdir(parents=True, exist_ok=True)
    result = eval_run(model, tasks, work / "eval-data", out / f"{name}.json", out / f"{name}.log")
    print(result_table(result))
    return result


def run_comparison(args: Any, work: Path, table: Any, *, raw: Path, augmented: Path,
                   eval_streams: dict[str, str]) -> Path:
    """Train both runs, evaluate both, write ``work/compare/{comparison.md, loss-curves.png}``."""
    from ipt_engine.eval.experiment import heldout_table, plot_loss_curves, train_run
    from ipt_engine.eval.report import compare_table
    from ipt_engine.pipeline_report import Count

    out = work / "compare"
    steps = args.train_steps
    interval = max(1, steps // 6)
    streams = {
        "raw": {"raw": {"local": str(raw)}},
        "ipt": None,  # tiny-cpu.yaml's own mix: raw and augmented by proportion
    }
    common = [f"max_duration={steps}ba", f"eval.interval={interval}ba",
              f"save_folder={out}/{{run_name}}/checkpoints", f"loggers.jsonl.path={out}/{{run_name}}/metrics.jsonl",
              eval_override(eval_streams)]
    for i, (name, desc) in enumerate(RUNS.items()):
        data = (f"train_loader.streams={json.dumps(streams[name])}" if streams[name] is not None else
                f"train_loader.streams.raw.local={raw}")
        extra = [] if streams[name] is not None else [f"train_loader.streams.augmented.local={augmented}"]
        print(f"[6/6] compare {i + 1}/2: train {desc} ({name}), {steps} batches -> {out / name}")
        with table.step(f"train {name}", out / name) as row:
            train_run(CONFIG, [data, *extra, f"run_name={name}", *common], out / f"{name}.train.log")
            row.items_out = Count(steps, "batches")
    tasks = runnable_tasks([t for t in args.eval_tasks.split(",") if t], work / "eval-data")
    results = {}
    if tasks:
        from ipt_engine.eval.experiment import eval_run

        for name in RUNS:
            print(f"[eval] ipt eval {name}: {','.join(tasks)}")
            with table.step(f"evaluate {name}", out / f"{name}.json"):
                results[name] = eval_run(out / name / "checkpoints" / "huggingface", tasks, work / "eval-data",
                                         out / f"{name}.json", out / f"{name}.eval.log")
    metrics = {name: out / name / "metrics.jsonl" for name in RUNS}
    png = out / "loss-curves.png"
    with table.step("plot loss curves", png):
        plot_loss_curves({f"{n} ({d})": metrics[n] for n, d in RUNS.items()}, png,
                         title=f"same init, {steps} batches each: raw only vs raw + augmented")
    parts = [f"# Raw only vs raw + augmented: {steps} batches each, same initialization", "",
             "Tiny models on the embedded corpus: these numbers show that the comparison runs end to end, "
             "not the paper's result.", "", heldout_table(metrics)]
    if results:
        parts += ["", compare_table(results["raw"], results["ipt"], ("raw", "ipt"))]
    parts += ["", f"![loss curves]({png.name})", ""]
    md = out / "comparison.md"
    md.write_text("\n".join(parts))
    print("\n".join(parts[4:-2]))
    print(f"\ncomparison: {md}\nloss curves: {png}")
    return md
