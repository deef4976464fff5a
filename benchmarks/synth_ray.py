"""Synthesis on Ray actors against the local path: the cost of the cluster layer, and scaling by engines.

``python -m benchmarks.synth_ray [--texts N] [--part-size P] [--rounds M] [--repeats R]``
(synth env; ``VLLM_CPU_KVCACHE_SPACE=1 VLLM_ENABLE_V1_MULTIPROCESSING=0`` on CPU).

Every configuration runs the same job through :func:`ipt_engine.io.parts.run_part_stage` — the same
planner, pipelined driver and per-part atomic commits as ``ipt synthesize`` — on long-lived engines
built before timing starts (engine start-up is the same cost either way and is paid once per actor):

- ``local``: the local path, one engine in this process on every core (``--workers 1``);
- ``ray-1``: one Ray actor on a throwaway local cluster, the same engine settings, every core;
- ``ray-2x1``: two actors, each pinned to one core (``IPT_CPU_AFFINITY``), against ``local`` (one engine
  on both cores): what splitting one machine into two engines does to throughput.

Same format-writing tiny model, greedy decoding, prefix cache reset before every timed run (every
engine, actors included). Repeats are interleaved (each repeat runs every configuration, odd repeats in
reverse order) and medians reported, as in :mod:`benchmarks.synth`. The results file is rewritten after
every repeat; ``--plot`` draws the PNG beside it (matplotlib: the train env).

Derived figures (``derived`` in the results): ``per_part_overhead_s``, what handing a part to an actor
and its rows back costs: the median of (wall − generation time) of ``ray-1`` minus that of ``local``, per
part; ``engine_time_ratio``, the actor engine's generation time over the local one's (1 when the actor's
engine runs as fast as the local one); ``engine_tokens_per_s``, the local engine's generated tokens per
second of wall time. For N engines (one per GPU) the expected rate is N × engine rate × part_seconds /
(part_seconds + overhead), the README's "Scaling out" estimate. The expectation written before the first
measurement is in ``PREDICTION`` and goes into the results beside what was measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CONFIGS = ("local", "ray-1", "ray-2x1")
PREDICTION = (
    "On a part of 8 texts (~4 s of generation here) Ray adds a task round trip and pickles a few kB of records "
    "and rows: ~10-30 ms per part, so ray-1 is 0.97-1.0x the local path (goal >= 0.9x). ray-2x1 against one "
    "engine on two cores: the tiny model's steps are dominated by per-step overhead that one thread pays as well "
    "as two, so two single-core engines each carrying half the sequences should reach 1.3-1.6x."
)
PREDICTED = {"ray-1": 0.985, "ray-2x1": 1.45}  # throughput ratio against "local" (module docstring)
ENGINE = {"max_model_len": 2048, "enforce_eager": True, "dtype": "float32"}


class KeepOpen:
    """An executor that survives ``run_part_stage``'s close, so actors live across repeats."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.capacity = inner.capacity

    def submit(self, index: int, records: list[Any]) -> Any:
        return self.inner.submit(index, records)

    def result(self, handle: Any) -> Any:
        return self.inner.result(handle)

    def close(self) -> None:
        pass


def _stage(corpus: Path, out: Path, args: argparse.Namespace, process: Any, executor: Any) -> dict:
    from ipt_engine.io.parts import run_part_stage

    t0 = time.perf_counter()
    result = run_part_stage(stage="synthesize", sources=[corpus], output=out, params={"bench": 1},
                            process=process, part_size=args.part_size, resume=False, overwrite=True,
                            executor=executor)
    seconds = time.perf_counter() - t0
    tokens = int(result.stats.get("generated_tokens", 0))
    return {"seconds": seconds, "tokens_per_s": tokens / seconds, "texts_per_s": result.records / seconds,
            "generated_tokens": tokens, "chains": int(result.stats.get("chains", 0)),
            "parts": result.parts_written, "generate_seconds": float(result.stats.get("generate_seconds", 0.0)),
            "prefix_hit_rate": (result.stats.get("cached_prompt_tokens", 0) / result.stats["prompt_tokens"]
                                if result.stats.get("prompt_tokens") else None),
            "rows_sha": _rows_digest(out)}


def _rows_digest(out: Path) -> str:
    import hashlib

    manifest = json.loads((out / "manifest.json").read_text())
    h = hashlib.sha256()
    for part in manifest["outputs"]:
        h.update((out / part["file"]).read_bytes())
    return h.hexdigest()[:16]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=48)
    parser.add_argument("--part-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out-dir", default=None)
    parser.add_argument("--model", default=None, help="default: the format-writing tiny model")
    parser.add_argument("--plot", metavar="RESULTS_JSON", default=None,
                        help="only draw the PNG of an existing results file (needs matplotlib: the train env)")
    args = parser.parse_args(argv)
    if args.plot:
        print(plot(Path(args.plot)))
        return

    import functools

    from ipt_engine.synth.format_model import corpus_texts, format_model_dir

    # Before Ray is imported: it adds attributes to standard-library modules, whose docstrings are the
    # format model's corpus, so the cache key would change.
    model = args.model or str(format_model_dir())

    import ray

    from ipt_engine.synth.config import from_dict
    from ipt_engine.synth.ray_runner import RayPartExecutor
    from ipt_engine.synth.stage import EngineSpec, close_engines, get_engine, process_part

    texts = corpus_texts()[: args.texts]
    work = Path(tempfile.mkdtemp(prefix="synth-ray-"))
    corpus = work / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    spec = EngineSpec("vllm", model, from_dict({"engine": ENGINE, "sampling": {"max_tokens": args.max_tokens}}))
    process = functools.partial(process_part, spec, args.rounds, None, None)

    cores = len(os.sched_getaffinity(0))
    os.environ.setdefault("RAY_worker_niceness", "0")  # as `--ray local` starts its cluster
    ray.init(address="local", num_cpus=cores, include_dashboard=False, log_to_driver=False)
    t_start = time.perf_counter()
    local_engine = get_engine(spec)
    # The same engine settings as local: every core (Ray would set OMP_NUM_THREADS=1 for the actor).
    ray1 = RayPartExecutor(address="local", actors=1, gpus_per_actor=1, spec=spec,
                           rounds=args.rounds, cpus_per_actor=0,
                           actor_env=lambda slot: {"OMP_NUM_THREADS": str(cores)})
    ray2 = RayPartExecutor(address="local", actors=2, gpus_per_actor=1, spec=spec,
                           rounds=args.rounds, cpus_per_actor=0,
                           actor_env=lambda slot: {"IPT_CPU_AFFINITY": str(slot % cores), "OMP_NUM_THREADS": "1"})
    for ex in (ray1, ray2):
        ex._start()
    start_seconds = time.perf_counter() - t_start
    runners = {"local": (local_engine, None), "ray-1": (None, ray1), "ray-2x1": (None, ray2)}

    def reset(name: str) -> None:
        engine, ex = runners[name]
        if engine is not None:
            engine.llm.reset_prefix_cache()
        else:
            ray.get([a.handle.reset_prefix_cache.remote() for a in ex.actors])

    warm = work / "warm.jsonl"  # warm-up: every engine serves a small job once
    warm.write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus_texts()[-8:]))
    for name in CONFIGS:
        _engine, ex = runners[name]
        _stage(warm, work / f"warm-{name}", argparse.Namespace(part_size=4), process,
               KeepOpen(ex) if ex is not None else None)
    samples: dict[str, list[dict]] = {}
    path = None
    for repeat in range(args.repeats):
        for name in CONFIGS[::-1] if repeat % 2 else CONFIGS:
            reset(name)
            _engine, ex = runners[name]
            r = _stage(corpus, work / name, args, process, KeepOpen(ex) if ex is not None else None)
            samples.setdefault(name, []).append(r)
            print(f"repeat {repeat + 1} {name:8s} {r['seconds']:7.2f} s {r['tokens_per_s']:8.1f} tok/s "
                  f"{r['texts_per_s']:6.2f} texts/s parts {r['parts']} chains {r['chains']} rows {r['rows_sha']}",
                  flush=True)
        path = _write(args, len(texts), samples, start_seconds, cores)
    for ex in (ray1, ray2):
        ex.close()
    close_engines()
    ray.shutdown()
    print(path)
    try:
        print(plot(path))
    except ImportError:
        print(f"no matplotlib here; draw the figure with: .venv/bin/python -m benchmarks.synth_ray --plot {path}")


def _summary(runs: list[dict]) -> dict:
    return {**runs[-1], **{k: statistics.median(r[k] for r in runs) for k in ("seconds", "tokens_per_s", "texts_per_s")},
            "samples_seconds": [r["seconds"] for r in runs], "samples_tokens_per_s": [r["tokens_per_s"] for r in runs]}


def _write(args: argparse.Namespace, n_texts: int, samples: dict[str, list[dict]], start_seconds: float,
           cores: int) -> Path:
    from benchmarks.common import case, spread, write_results

    res = {name: _summary(runs) for name, runs in samples.items()}
    repeats = min(len(v) for v in samples.values())
    base = res["local"]
    params = {"texts": n_texts, "part_size": args.part_size, "rounds": args.rounds, "max_tokens": args.max_tokens,
              "engine": ENGINE, "repeats": repeats, "cores": cores}
    cases = []
    for name in CONFIGS[1:]:
        ours = res[name]
        for unit, key in (("generated tokens/s", "tokens_per_s"), ("texts/s", "texts_per_s")):
            cases.append(case(
                f"synthesize {name} vs local ({unit})", {**params, "config": name}, unit, base[key], ours[key],
                repeats=repeats,
                spread={"baseline": spread([r[key] for r in samples["local"]])["range"],
                        "ours": spread([r[key] for r in samples[name]])["range"]},
                predicted_ratio=PREDICTED[name] if key == "tokens_per_s" else None,
                same_rows=ours["rows_sha"] == base["rows_sha"],
                baseline_detail=base, ours_detail=ours,
            ))
    parts = base["parts"]
    def outside_engine(runs: list[dict]) -> float:
        return statistics.median(r["seconds"] - r["generate_seconds"] for r in runs)

    derived = {
        "per_part_overhead_s": (outside_engine(samples["ray-1"]) - outside_engine(samples["local"])) / parts,
        "engine_time_ratio": (statistics.median(r["generate_seconds"] for r in samples["ray-1"])
                              / statistics.median(r["generate_seconds"] for r in samples["local"])),
        "local_part_seconds": base["seconds"] / parts,
        "engine_tokens_per_s": base["tokens_per_s"],
        "engine_start_seconds_all": start_seconds,
    }
    return write_results("synth-ray", cases, out_dir=args.out_dir,
                         extra={"model": "format-writing tiny Llama (ipt_engine.synth.format_model)",
                                "derived": derived,
                                "predictions": PREDICTION})


def plot(results_json: Path) -> Path:
    """Bars: median seconds per configuration, every repeat as a dot; the ratio against local above."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doc = json.loads(Path(results_json).read_text())
    rows = [c for c in doc["cases"] if c["unit"] == "generated tokens/s"]
    details = {"local": rows[0]["baseline_detail"], **{c["params"]["config"]: c["ours_detail"] for c in rows}}
    ratios = {c["params"]["config"]: c["ratio"] for c in rows}
    fig, ax = plt.subplots(figsize=(6, 4))
    for x, name in enumerate(CONFIGS):
        d = details[name]
        ax.bar(x, d["tokens_per_s"], color="tab:gray" if name == "local" else "tab:blue", alpha=0.6)
        ax.scatter([x] * len(d["samples_tokens_per_s"]), d["samples_tokens_per_s"], color="k", s=10, zorder=3)
        label = "1.00×" if name == "local" else f"{ratios[name]:.2f}×"
        ax.text(x, d["tokens_per_s"] * 1.02, label, ha="center", va="bottom", fontsize=9)
    ax.set_xticks(range(len(CONFIGS)), ["local\n1 engine × all cores", "ray-1\n1 actor × all cores",
                                        "ray-2x1\n2 actors × 1 core"], fontsize=8)
    ax.set_ylabel("generated tokens/s (median, dots: repeats)")
    der = doc.get("derived", {})
    ax.set_title(f"ipt synthesize --ray — {doc['env']['gpu'] or doc['env']['cpu']}\n"
                 f"per-part overhead {der.get('per_part_overhead_s', 0) * 1000:+.0f} ms "
                 f"on {der.get('local_part_seconds', 0):.1f} s parts", fontsize=9)
    from benchmarks.plots import save_beside

    return save_beside(fig, results_json)


if __name__ == "__main__":
    main()
