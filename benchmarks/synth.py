"""Synthesis throughput: the paper's procedure and what users run instead, against ours.

``python -m benchmarks.synth [--quick] [--profile DIR] [--texts N] [--rounds 2 3] [--max-tokens 400]
[--repeats R] [--no-server] [--out-dir DIR]`` (synth env; ``VLLM_CPU_KVCACHE_SPACE=1
VLLM_ENABLE_V1_MULTIPROCESSING=0`` on CPU). ``--quick`` is the smallest meaningful run (one regime, 24
texts, M=2, one repeat, no n-gram engine, no server; about a minute on 2 cores after the model loads).
``--profile DIR`` writes a ``torch.profiler`` trace and top-15 table
(:func:`benchmarks.profiling.write_profile`) of a few steady-state steps of ours (``+pipelined``).

Same engine build, same format-writing tiny model (:mod:`ipt_engine.synth.format_model`, so chains
really continue across rounds), same input texts, greedy decoding, ``max_tokens=400``,
``max_model_len=4096``, every engine option at vLLM's default (prefix caching on, as vLLM ships it).
No structured decoding anywhere: it would change the engine's cost. The prefix cache is reset before
every timed run so no run inherits another's cached prompts.

Configurations (cumulative ladder, then n-gram alone):

- ``paper``: the paper's procedure — planned with the 1.5 × words estimate, prompts sent as strings
  (vLLM tokenizes them, adding its own BOS), one ``LLM.generate`` call per round over every chain;
- ``+exact-budget``: planned in the model's tokens, token ids in, no re-tokenization;
- ``+pipelined``: chain-pipelined add_request/step loop (ours without speculation);
- ``+ngram``: prompt-lookup speculative decoding on top (ours, full);
- ``paper+ngram``: speculation alone on the paper's procedure, to isolate it.

What users run instead, on the same model, the same texts and the same engine options:

- ``plain-generate``: what a user writes without this project — the format's round-1 prompt string
  for every text (no carried history), one ``LLM.generate`` call over all of them, greedy,
  ``max_tokens`` as ours. It does **one round only**, so it is compared per generated token (its
  prompts are shorter: nothing to re-prefill, nothing to cache), never per text or per chain;
- ``serve-rounds`` and ``serve-pipelined``: our ``openai`` engine against a local ``vllm serve``
  started here (127.0.0.1, a free port, the regime's engine options, stopped at the end; skipped
  with a one-line reason when it cannot start within ``--server-timeout``), round by round — what a
  client of a server does, one round's requests at once — and chain-pipelined. Run at the largest
  M only (each is a full run); the server's prefix cache is reset before each run through its dev
  endpoint and its hit rate read from ``/metrics``.

Two regimes (``--regime``):

- ``short``: 96 paragraph-sized texts (~100 tokens), engine defaults, the KV cache far larger than the
  whole job — nothing is ever evicted, so the paper's procedure keeps every prefix cached between
  rounds;
- ``corpus`` (the default): 192 texts of ~350 words cut from the embedded default corpus, 16 concurrent
  sequences and a 49,152-token KV cache (384 blocks of 128) for every configuration. That is the
  pressure a 7B synthesizer meets on a real corpus: the cache holds about 1.5 full batches (a 7B model
  on one 80 GB GPU holds about one: ~470k tokens against 256 sequences of ~2k), while one round's
  prompts are many times the cache, so a round-by-round run has evicted a chain's earlier round by the
  time its next round starts.

Each configuration runs ``--repeats`` times, interleaved (one run of each, then again, every other
repeat in reverse order), and the median is reported: the machine's speed drifts, and interleaving
spreads the drift over every configuration. The results file is rewritten after every repeat, and
each run records its per-round seconds and tokens (``samples_round_seconds``).
Every run reports its prefix-cache hit rate (prompt tokens vLLM served from the cache), which is where
the pipelined schedule's gain comes from.

Each case records the ratio predicted for it (``predicted_ratio``); the predictions, each written
before its measurement, and what was measured against them are in
``benchmarks/results/synthesize-predictions.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PREDICTED = {  # generated tokens/s relative to "paper", per regime and rounds M (results/synthesize-predictions.md, latest)
    "short": {"+exact-budget": {2: 1.0, 3: 1.0}, "+pipelined": {2: 1.0, 3: 1.0},
              "+ngram": {2: 0.85, 3: 0.85}, "paper+ngram": {2: 0.85, 3: 0.85}},
    "corpus": {"+exact-budget": {2: 1.0, 3: 1.0}, "+pipelined": {2: 1.16, 3: 1.19},
               "+ngram": {2: 1.10, 3: 1.35}, "paper+ngram": {2: 0.94, 3: 0.94}},
}
LADDER = ("paper", "+exact-budget", "+pipelined", "+ngram", "paper+ngram")  # the order results are listed in
REGIMES = {  # engine options shared by every configuration of a regime
    "short": {"texts": 96, "engine": {}},
    "corpus": {"texts": 192, "engine": {"max_num_seqs": 16, "num_gpu_blocks_override": 384}},
}
MAX_MODEL_LEN = 4096


class StringPrompts:
    """The paper's way in: string prompts, tokenized by vLLM (which adds its own BOS)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.supports_pipelining = False
        self.name = "vllm-strings"

    def complete(self, prompts: list[Any], max_tokens: list[int]) -> list[Any]:
        outs = self.engine.llm.generate(list(prompts), [self.engine.sampling_params(m) for m in max_tokens],
                                        use_tqdm=False)
        return [self.engine._completion(o) for o in outs]

    def encode(self, prompt: str) -> str:
        return prompt  # the string goes to vLLM as is


def corpus_chunks(n: int, words: int = 350) -> list[str]:
    """``n`` texts of up to ``words`` words, cut at paragraph boundaries from the embedded default corpus."""
    from ipt_engine.corpus import iter_stdlib_documents

    out: list[str] = []
    for doc in iter_stdlib_documents():
        current: list[str] = []
        for para in doc["text"].split("\n\n"):
            if current and len(" ".join(current).split()) + len(para.split()) > words:
                out.append("\n\n".join(current))
                current = []
            current.append(para)
            if len(out) == n:
                return out
        if current and len(" ".join(current).split()) >= words // 3:
            out.append("\n\n".join(current))
        if len(out) == n:
            return out
    return out


class RoundTimer:
    """Wraps a round-by-round engine to time each ``complete`` call: where a round-by-round run spends it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.supports_pipelining = False
        self.name = inner.name
        self.rounds: list[dict] = []

    def complete(self, prompts: list[Any], max_tokens: list[int]) -> list[Any]:
        t0 = time.perf_counter()
        outs = self.inner.complete(prompts, max_tokens)
        tokens = sorted(o.tokens for o in outs)
        self.rounds.append({
            "seconds": time.perf_counter() - t0,
            "requests": len(outs),
            "generated_tokens": sum(tokens),
            "at_max_tokens": sum(o.finish_reason == "length" for o in outs),
            "p90_generated": tokens[int(0.9 * (len(tokens) - 1))],
        })
        return outs

    def encode(self, prompt: str) -> Any:
        return self.inner.encode(prompt)


def run_once(engine: Any, texts: list[str], rounds: int, max_tokens: int, *, exact: bool, pipelined: bool) -> dict:
    import warnings

    from ipt_engine.synth.pipelined import run_pipelined, run_rounds
    from ipt_engine.synth.planner import plan_chains

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the word estimate warns, on purpose, in the paper config
        chains = plan_chains(texts, rounds, max_model_len=MAX_MODEL_LEN, max_new_tokens=max_tokens,
                             tokenizer=engine.tokenizer if exact else None)
    engine.llm.reset_prefix_cache()
    timer = None
    t0 = time.perf_counter()
    if pipelined:
        stats = run_pipelined(chains, engine)
    else:
        timer = RoundTimer(engine if exact else StringPrompts(engine))
        stats = run_rounds(chains, timer)
    seconds = time.perf_counter() - t0
    entries = [e for c in chains for e in c.entries()]
    return {
        "seconds": seconds,
        "tokens_per_s": stats.generated_tokens / seconds,
        "texts_per_s": len(texts) / seconds,
        "generated_tokens": stats.generated_tokens,
        "requests": stats.requests,
        "failed": stats.failed_requests,
        "pairs_per_text": sum(len(e["QA_list"]) for e in entries) / len(texts),
        "carried_entries": sum(e["inherit_from_prev"] for e in entries),
        "prompt_tokens": stats.prompt_tokens,
        "prefix_hit_rate": stats.prefix_hit_rate,
        "per_round": timer.rounds if timer else None,
    }


def summarize(samples: list[dict]) -> dict:
    """The median of each rate over the repeats, every sample kept beside it (counts from the last run)."""
    median = {k: statistics.median(r[k] for r in samples) for k in ("seconds", "tokens_per_s", "texts_per_s")}
    return {
        **samples[-1],
        **median,
        "samples_tokens_per_s": [r["tokens_per_s"] for r in samples],
        "samples_round_seconds": [[x["seconds"] for x in r["per_round"]] for r in samples if r["per_round"]],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regime", choices=sorted(REGIMES), default="corpus")
    parser.add_argument("--texts", type=int, default=None, help="default: the regime's")
    parser.add_argument("--rounds", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--max-tokens", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out-dir", default=None)
    parser.add_argument("--plot", metavar="RESULTS_JSON", default=None,
                        help="only draw the PNG of an existing results file (needs matplotlib: the train env)")
    args = parser.parse_args(argv)
    if args.plot:
        print(plot(Path(args.plot)))
        return

    from ipt_engine.synth.config import from_dict
    from ipt_engine.synth.engines.vllm_engine import VLLMEngine
    from ipt_engine.synth.format_model import corpus_texts, format_model_dir

    model = str(format_model_dir())
    regime = REGIMES[args.regime]
    n_texts = args.texts or regime["texts"]
    texts = corpus_texts()[:n_texts] if args.regime == "short" else corpus_chunks(n_texts)
    plans = {
        False: [("paper", dict(exact=False, pipelined=False)), ("+exact-budget", dict(exact=True, pipelined=False)),
                ("+pipelined", dict(exact=True, pipelined=True))],
        True: [("paper+ngram", dict(exact=False, pipelined=False)), ("+ngram", dict(exact=True, pipelined=True))],
    }
    # Both engines (speculation needs its own) are built up front and held together, and each repeat
    # runs every configuration once, so all five configurations share each time window. Building
    # them up front matters too: vLLM's CPU platform cannot build a third engine in one process
    # once a speculating engine has run.
    engines = {}
    for ngram in plans:
        cfg = from_dict({"engine": {"max_model_len": MAX_MODEL_LEN, "ngram_speculation": ngram, **regime["engine"]},
                         "sampling": {"max_tokens": args.max_tokens}})
        engines[ngram] = VLLMEngine(model, cfg)
    for engine in engines.values():
        run_once(engine, texts[:8], 2, args.max_tokens, exact=True, pipelined=True)  # warm-up
    samples: dict[tuple[str, int], list[dict]] = {}
    for repeat in range(args.repeats):
        for rounds in args.rounds:
            # Odd repeats run the configurations in reverse, so a machine that drifts slower (or
            # faster) across a repeat favours no configuration over the medians.
            order = [(ngram, name, how) for ngram, configs in plans.items() for name, how in configs]
            for ngram, name, how in order[::-1] if repeat % 2 else order:
                r = run_once(engines[ngram], texts, rounds, args.max_tokens, **how)
                samples.setdefault((name, rounds), []).append(r)
                print(f"repeat {repeat + 1} M={rounds} {name:14s} {r['tokens_per_s']:8.1f} tok/s "
                      f"{r['texts_per_s']:6.2f} texts/s generated {r['generated_tokens']} "
                      f"pairs/text {r['pairs_per_text']:.2f} carried {r['carried_entries']} "
                      f"prefix hits {r['prefix_hit_rate'] or 0:.0%}", flush=True)
        # Rewritten after every repeat, so a run cut short keeps the repeats it completed.
        path = _write(args, texts, samples)
    for engine in engines.values():
        engine.close()
    print(path)
    try:
        print(plot(path))
    except ImportError:
        print(f"no matplotlib here; draw the figure with: .venv/bin/python -m benchmarks.synth --plot {path}")


def _write(args: argparse.Namespace, texts: list[str], samples: dict[tuple[str, int], list[dict]]) -> Path:
    """Summarize the samples gathered so far and write the results file."""
    from benchmarks.common import case, write_results

    regime = REGIMES[args.regime]
    results = {key: summarize(runs) for key, runs in samples.items()}
    repeats = len(next(iter(samples.values())))
    cases = []
    for rounds in args.rounds:
        base = results[("paper", rounds)]
        params = {"regime": args.regime, "rounds": rounds, "texts": len(texts), "max_tokens": args.max_tokens,
                  "max_model_len": MAX_MODEL_LEN, "repeats": repeats, "engine": regime["engine"]}
        for name in LADDER[1:]:
            ours = results[(name, rounds)]
            for unit, key in (("generated tokens/s", "tokens_per_s"), ("texts/s", "texts_per_s")):
                cases.append(case(f"synthesize {name} M={rounds} ({unit})", params, unit, base[key], ours[key],
                                  predicted_ratio=PREDICTED[args.regime][name][rounds] if key == "tokens_per_s" else None,
                                  baseline_detail=base,
                                  ours_detail=ours))
    return write_results(f"synthesize-{args.regime}", cases, out_dir=args.out_dir,
                         extra={"model": "format-writing tiny Llama (ipt_engine.synth.format_model)",
                                "predictions": "benchmarks/results/synthesize-predictions.md"})



def plot(results_json: Path) -> Path:
    """Draw generated tokens/s per configuration, every repeat as a dot, next to the results file.

    One panel per M. Bars are medians; the dashed line is the predicted median (the prediction's
    ratio times the paper's median), so a reader sees at a glance which lever behaved as predicted
    and how far the repeats scatter.
    """
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doc = json.loads(Path(results_json).read_text())
    by_rounds: dict[int, dict[str, tuple[dict, float | None]]] = {}
    for c in doc["cases"]:
        if c["unit"] != "generated tokens/s":
            continue
        name = c["name"].split()[1]
        rows = by_rounds.setdefault(c["params"]["rounds"], {})
        rows["paper"] = (c["baseline_detail"], 1.0)
        rows[name] = (c["ours_detail"], c.get("predicted_ratio"))
    fig, axes = plt.subplots(1, len(by_rounds), figsize=(5.5 * len(by_rounds), 4.2), squeeze=False)
    for ax, (rounds, rows) in zip(axes[0], sorted(by_rounds.items())):
        names = [n for n in LADDER if n in rows]
        paper = rows["paper"][0]["tokens_per_s"]
        for x, name in enumerate(names):
            detail, predicted = rows[name]
            color = "tab:gray" if name == "paper" else "tab:blue" if "ngram" not in name else "tab:orange"
            ax.bar(x, detail["tokens_per_s"], color=color, alpha=0.6)
            samples = detail["samples_tokens_per_s"]
            ax.scatter([x] * len(samples), samples, color="k", s=10, zorder=3)
            if predicted:
                ax.hlines(paper * predicted, x - 0.4, x + 0.4, colors="k", linestyles="--", linewidth=1)
            hits = detail.get("prefix_hit_rate") or 0
            ax.text(x, paper * 0.05, f"{detail['tokens_per_s'] / paper:.2f}×\n{hits:.0%} prefix\nhits",
                    ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
        ax.set_ylabel("generated tokens/s")
        ax.set_ylim(0, max(max(r[0]["samples_tokens_per_s"]) for r in rows.values()) * 1.25)
        ax.set_title(f"M={rounds}: medians (bars), repeats (dots), predicted (dashed)", fontsize=9)
    fig.suptitle(f"ipt synthesize vs the paper's procedure — {doc['env']['gpu'] or doc['env']['cpu']}",
                 fontsize=10)
    fig.tight_layout()
    out = Path(results_json).with_suffix(".png")
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


if __name__ == "__main__":
    main()
