"""Synthesis throughput: the paper's procedure and what users run instead, against ours.

``python -m benchmarks.synth [--quick] [--profile DIR] [--texts N] [--rounds 2 3] [--max-tokens 400]
[--repeats R] [--no-server] [--no-ngram] [--out-dir DIR]`` (synth env; ``VLLM_CPU_KVCACHE_SPACE=1
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
# What users run instead (PREDICTION 5 in results/synthesize-predictions.md), as ours-over-baseline ratios in generated tokens/s, regime corpus.
PREDICTED_BASELINES = {
    "plain-generate": {2: 0.75, 3: 0.65},   # +pipelined at M against one round of plain LLM.generate
    "serve-rounds": {3: 1.25},              # serve-pipelined against serve-rounds
    "serve-pipelined": {3: 1.1},            # offline +pipelined against serve-pipelined
}
LADDER = ("paper", "+exact-budget", "+pipelined", "+ngram", "paper+ngram")  # the order results are listed in
BASELINES = ("plain-generate", "serve-rounds", "serve-pipelined")  # what users run instead
REGIMES = {  # engine options shared by every configuration of a regime
    "short": {"texts": 96, "engine": {}},
    "corpus": {"texts": 192, "engine": {"max_num_seqs": 16, "num_gpu_blocks_override": 384}},
}
QUICK = {"regime": "corpus", "texts": 24, "rounds": [2], "repeats": 1}
MAX_MODEL_LEN = 4096
SERVED_NAME = "ipt-format-model"
PROFILE_GROUPS = {  # operator-name substrings per group, for the profile's second table (first match wins)
    "attention": ["attention", "attn", "paged", "sdpa", "flash", "rotary", "rope"],
    "matmul": ["aten::mm", "addmm", "linear", "matmul", "gemm", "bmm", "onednn", "mkldnn"],
    "sampling": ["sampl", "topk", "top_k", "argmax", "sort", "logits"],
    "norm and activation": ["rms", "norm", "silu", "gelu", "act_and_mul", "mul"],
}


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


def run_once(engine: Any, texts: list[str], rounds: int, max_tokens: int, *, exact: bool, pipelined: bool,
             server: LocalServer | None = None) -> dict:
    """One timed run of the planner and a driver on ``engine`` (offline vLLM, or openai on ``server``)."""
    import warnings

    from ipt_engine.synth.pipelined import run_pipelined, run_rounds
    from ipt_engine.synth.planner import plan_chains

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the word estimate warns, on purpose, in the paper config
        chains = plan_chains(texts, rounds, max_model_len=MAX_MODEL_LEN, max_new_tokens=max_tokens,
                             tokenizer=engine.tokenizer if exact else None)
    if server is not None:
        server.reset_prefix_cache()
        before = server.prefix_counters()
    else:
        engine.llm.reset_prefix_cache()
    timer = None
    t0 = time.perf_counter()
    if pipelined:
        stats = run_pipelined(chains, engine)
    else:
        timer = RoundTimer(engine if exact else StringPrompts(engine))
        stats = run_rounds(chains, timer)
    seconds = time.perf_counter() - t0
    hit_rate = stats.prefix_hit_rate
    if server is not None:
        hit_rate = server.hit_rate_since(before)
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
        "prefix_hit_rate": hit_rate,
        "per_round": timer.rounds if timer else None,
    }


def run_plain(engine: Any, texts: list[str], max_tokens: int) -> dict:
    """What a user writes without this project: every text's round-1 prompt string, one ``generate`` call.

    The prompt is the format's (``render_prompt([], text)``: the model card's layout), passed as a
    string, so vLLM tokenizes it and adds its own BOS, as it does for any user; greedy decoding with
    the same ``max_tokens``. One round only: no chain, no carried history.
    """
    from vllm import SamplingParams

    from ipt_engine.synth.parse import parse_pairs
    from ipt_engine.synth.prompt import render_prompt

    prompts = [render_prompt([], t) for t in texts]
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    engine.llm.reset_prefix_cache()
    t0 = time.perf_counter()
    outs = engine.llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - t0
    generated = sum(len(o.outputs[0].token_ids) for o in outs)
    prompt_tokens = sum(len(o.prompt_token_ids or ()) for o in outs)
    cached = sum(getattr(o, "num_cached_tokens", None) or 0 for o in outs)
    return {
        "seconds": seconds,
        "tokens_per_s": generated / seconds,
        "texts_per_s": len(texts) / seconds,
        "generated_tokens": generated,
        "requests": len(outs),
        "failed": 0,
        "pairs_per_text": sum(len(parse_pairs(o.outputs[0].text)) for o in outs) / len(texts),
        "carried_entries": 0,
        "prompt_tokens": prompt_tokens,
        "prefix_hit_rate": cached / prompt_tokens if prompt_tokens else None,
        "per_round": None,
    }


class LocalServer:
    """A ``vllm serve`` (the OpenAI-compatible API server) on 127.0.0.1 and a free port, for one benchmark.

    Started in its own process group with the regime's engine options, so stopping it stops its engine
    core too; its log goes to a temporary file whose tail is the reason shown when it fails to start.
    ``VLLM_SERVER_DEV_MODE=1`` exposes ``/reset_prefix_cache``, so every run starts cold as offline ones do.
    """

    def __init__(self, model: str, engine_options: dict[str, Any], *, timeout_s: float) -> None:
        self.model = model
        self.engine_options = engine_options
        self.timeout_s = timeout_s
        self.proc: Any = None
        self.port: int | None = None
        self.log_path: Path | None = None
        self.start_seconds: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> str | None:
        """Start and wait for ``/health``; None when up, else a one-line reason (the server is stopped)."""
        import socket
        import subprocess
        import sys
        import tempfile
        import urllib.request

        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
               "--host", "127.0.0.1", "--port", str(self.port), "--served-model-name", SERVED_NAME,
               "--max-model-len", str(MAX_MODEL_LEN), "--seed", "0", "--disable-uvicorn-access-log",
               "--uvicorn-log-level", "warning"]
        for key, value in self.engine_options.items():
            cmd += [f"--{key.replace('_', '-')}", str(value)]
        env = dict(os.environ, VLLM_SERVER_DEV_MODE="1")
        env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)  # the API server runs its engine core apart
        fd, log = tempfile.mkstemp(prefix="ipt-bench-vllm-serve-", suffix=".log")
        self.log_path = Path(log)
        t0 = time.perf_counter()
        try:
            self.proc = subprocess.Popen(cmd, stdout=fd, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        except OSError as e:
            os.close(fd)
            return f"could not run the API server: {e}"
        os.close(fd)
        while time.perf_counter() - t0 < self.timeout_s:
            if self.proc.poll() is not None:
                return f"vllm serve exited with status {self.proc.returncode}: {self._last_log_line()}"
            try:
                with urllib.request.urlopen(self.base_url + "/health", timeout=2) as r:
                    if r.status == 200:
                        self.start_seconds = time.perf_counter() - t0
                        return None
            except OSError:
                pass
            time.sleep(1.0)
        why = f"vllm serve was not up within {self.timeout_s:.0f} s (last log line: {self._last_log_line(any_line=True)})"
        self.stop()
        return why

    def _last_log_line(self, *, any_line: bool = False) -> str:
        """The log's last error line (its last line with ``any_line``), for a one-line reason."""
        try:
            lines = [x for x in self.log_path.read_text(errors="replace").splitlines() if x.strip()]
        except (OSError, AttributeError):
            return "no log"
        errors = [] if any_line else [x for x in lines if "Error" in x or "error" in x]
        return (errors or lines or ["empty log"])[-1].strip()[:240]

    def reset_prefix_cache(self) -> None:
        import urllib.request

        req = urllib.request.Request(self.base_url + "/reset_prefix_cache", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=30):
            pass

    def prefix_counters(self) -> tuple[float, float] | None:
        """(prefix-cache hits, queries) in tokens from ``/metrics``, or None when it does not say."""
        import urllib.request

        try:
            with urllib.request.urlopen(self.base_url + "/metrics", timeout=10) as r:
                text = r.read().decode("utf-8", "replace")
        except OSError:
            return None
        totals = {"vllm:prefix_cache_hits": 0.0, "vllm:prefix_cache_queries": 0.0}
        seen = False
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            name = line.split("{", 1)[0].split(" ", 1)[0].removesuffix("_total")
            if name in totals:
                totals[name] += float(line.rsplit(" ", 1)[1])
                seen = True
        return (totals["vllm:prefix_cache_hits"], totals["vllm:prefix_cache_queries"]) if seen else None

    def hit_rate_since(self, before: tuple[float, float] | None) -> float | None:
        after = self.prefix_counters()
        if before is None or after is None or after[1] <= before[1]:
            return None
        return (after[0] - before[0]) / (after[1] - before[1])

    def stop(self) -> None:
        import signal
        import subprocess

        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server and its engine core, nothing else
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass


class StopAfterProfile(BaseException):
    """Raised by :class:`ProfiledSteps` once its steps are profiled: the rest of the run is not needed.
    A BaseException, so the pipelined driver's per-step error handling does not take it for a failed step."""


class ProfiledSteps:
    """Wraps an engine for :func:`run_pipelined` and profiles ``steps`` of its ``poll`` (engine steps)
    after ``warmup`` steps, so the profile holds steady-state steps of ours: a full batch of decodes
    with the next rounds' prefills mixed in, as in a timed run. Then it stops the run
    (:class:`StopAfterProfile`); :meth:`drain` aborts what is still in flight."""

    def __init__(self, engine: Any, *, warmup: int, steps: int) -> None:
        self.engine = engine
        self.warmup = warmup
        self.steps = steps
        self.calls = 0
        self.prof: Any = None
        self.submitted: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def submit(self, prompt: Any, max_tokens: int) -> str:
        request_id = self.engine.submit(prompt, max_tokens)
        self.submitted.append(request_id)
        return request_id

    def poll(self) -> Any:
        from torch.profiler import profile

        from benchmarks.profiling import activities

        if self.calls == self.warmup:
            self.prof = profile(activities=activities())
            self.prof.start()
        out = self.engine.poll()
        self.calls += 1
        if self.prof is not None:
            self.prof.step()
            if self.calls == self.warmup + self.steps:
                self.prof.stop()
                raise StopAfterProfile
        return out

    def drain(self) -> None:
        self.engine.abort(self.submitted)
        while self.engine.has_unfinished():
            self.engine.poll()


def profile_ours(engine: Any, texts: list[str], rounds: int, max_tokens: int, out_dir: Path,
                 *, warmup: int = 24, steps: int = 12) -> dict:
    """Profile ``steps`` steady-state engine steps of ours (exact budget, pipelined), after ``warmup``."""
    from benchmarks.profiling import write_profile
    from ipt_engine.synth.pipelined import run_pipelined
    from ipt_engine.synth.planner import plan_chains

    chains = plan_chains(texts, rounds, max_model_len=MAX_MODEL_LEN, max_new_tokens=max_tokens,
                         tokenizer=engine.tokenizer)
    engine.llm.reset_prefix_cache()
    wrapped = ProfiledSteps(engine, warmup=warmup, steps=steps)
    t0 = time.perf_counter()
    try:
        run_pipelined(chains, wrapped)
    except StopAfterProfile:
        pass
    seconds = time.perf_counter() - t0
    wrapped.drain()
    if wrapped.prof is None:
        raise RuntimeError(f"the profiled run finished in {wrapped.calls} steps, before the {warmup} warm-up steps")
    profiled = wrapped.calls - warmup
    if profiled < steps:
        wrapped.prof.stop()
    result = write_profile(wrapped.prof, out_dir, f"synth-pipelined-M{rounds}", groups=PROFILE_GROUPS, steps=profiled)
    return {**result, "warmup_steps": warmup, "steps": profiled, "texts": len(texts), "rounds": rounds,
            "seconds_with_profiler": seconds}


def summarize(samples: list[dict]) -> dict:
    """The median of each rate over the repeats, every sample kept beside it (counts from the last run)."""
    median = {k: statistics.median(r[k] for r in samples) for k in ("seconds", "tokens_per_s", "texts_per_s")}
    return {
        **samples[-1],
        **median,
        "samples_tokens_per_s": [r["tokens_per_s"] for r in samples],
        "samples_texts_per_s": [r["texts_per_s"] for r in samples],
        "samples_round_seconds": [[x["seconds"] for x in r["per_round"]] for r in samples if r["per_round"]],
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regime", choices=sorted(REGIMES), default="corpus")
    parser.add_argument("--texts", type=int, default=None, help="default: the regime's")
    parser.add_argument("--rounds", type=int, nargs="+", default=None, help="default: 2 3")
    parser.add_argument("--max-tokens", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 3)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smallest meaningful run: {QUICK['texts']} texts, M={QUICK['rounds'][0]}, one "
                             "repeat, no n-gram engine, no server")
    parser.add_argument("--no-server", action="store_true", help="skip the openai engine on a local vllm serve")
    parser.add_argument("--no-ngram", action="store_true",
                        help="skip the speculating engine (+ngram, paper+ngram) and its start-up")
    parser.add_argument("--server-timeout", type=float, default=420.0, metavar="S",
                        help="seconds the local vllm serve may take to start before it is skipped")
    parser.add_argument("--profile", type=Path, metavar="DIR", default=None,
                        help="write a torch.profiler trace and top-15 table of steady-state steps of ours")
    parser.add_argument("--out-dir", default=None)
    parser.add_argument("--plot", metavar="RESULTS_JSON", default=None,
                        help="only draw the PNG of an existing results file (needs matplotlib: the train env)")
    return parser


def main(argv: list[str] | None = None) -> Path | None:
    args = build_parser().parse_args(argv)
    if args.plot:
        print(plot(Path(args.plot)))
        return None
    if args.quick:
        args.regime = QUICK["regime"]
        args.texts = args.texts or QUICK["texts"]
        args.rounds = args.rounds or QUICK["rounds"]
        args.repeats = args.repeats or QUICK["repeats"]
        args.no_server = True
    args.rounds = args.rounds or [2, 3]
    args.repeats = args.repeats or 3
    _stop_cleanly_on_sigterm()

    from ipt_engine.synth.config import from_dict
    from ipt_engine.synth.engines.vllm_engine import VLLMEngine
    from ipt_engine.synth.format_model import corpus_texts, format_model_dir

    t_start = time.perf_counter()
    model = str(format_model_dir())
    regime = REGIMES[args.regime]
    n_texts = args.texts or regime["texts"]
    texts = corpus_texts()[:n_texts] if args.regime == "short" else corpus_chunks(n_texts)
    plans = {
        False: [("paper", dict(exact=False, pipelined=False)), ("+exact-budget", dict(exact=True, pipelined=False)),
                ("+pipelined", dict(exact=True, pipelined=True))],
        True: [("paper+ngram", dict(exact=False, pipelined=False)), ("+ngram", dict(exact=True, pipelined=True))],
    }
    if args.quick or args.no_ngram:
        del plans[True]  # a second engine (speculation) costs its start-up; quick mode measures the rest
    # Both engines (speculation needs its own) are built up front and held together, and each repeat
    # runs every configuration once, so all configurations share each time window. Building
    # them up front matters too: vLLM's CPU platform cannot build a third engine in one process
    # once a speculating engine has run.
    engines = {}
    for ngram in plans:
        cfg = from_dict({"engine": {"max_model_len": MAX_MODEL_LEN, "ngram_speculation": ngram, **regime["engine"]},
                         "sampling": {"max_tokens": args.max_tokens}})
        engines[ngram] = VLLMEngine(model, cfg)
    for engine in engines.values():
        run_once(engine, texts[:8], 2, args.max_tokens, exact=True, pipelined=True)  # warm-up
    print(f"[synth] {len(engines)} engine(s) up and warm in {time.perf_counter() - t_start:.0f} s", flush=True)

    extra: dict[str, Any] = {}
    server, client = None, None
    if args.no_server:
        extra["server"] = {"skipped": "--quick" if args.quick else "--no-server"}
    else:
        server, client, extra["server"] = _start_server(model, regime, args)
    try:
        samples = _measure(args, texts, engines, plans, server, client, extra)
        path = _write(args, texts, samples, extra)
        if args.profile is not None:
            prof_rounds = max(args.rounds)
            t = time.perf_counter()
            extra["profile"] = profile_ours(engines[False], texts, prof_rounds, args.max_tokens, args.profile)
            print(f"[synth] profile ({time.perf_counter() - t:.0f} s): {extra['profile']['table']}", flush=True)
            path = _write(args, texts, samples, extra)
    finally:
        if client is not None:
            client.close()
        if server is not None:
            server.stop()
        for engine in engines.values():
            engine.close()
    print(path)
    _draw(path)
    return path


def _stop_cleanly_on_sigterm() -> None:
    """SIGTERM (a timeout, a harness stopping the run) unwinds like Ctrl-C: the ``finally`` that stops
    the local server and the engines runs, and the results of the completed repeats stay written."""
    import signal

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def _start_server(model: str, regime: dict, args: argparse.Namespace) -> tuple[Any, Any, dict]:
    """The local server and our openai client on it, or (None, None, why it was skipped)."""
    from ipt_engine.synth.config import from_dict
    from ipt_engine.synth.engines.openai_engine import OpenAIEngine

    server = LocalServer(model, regime["engine"], timeout_s=args.server_timeout)
    why = server.start()
    if why is not None:
        print(f"[synth] skip serve-rounds / serve-pipelined: {why}", flush=True)
        return None, None, {"skipped": why}
    print(f"[synth] vllm serve up on 127.0.0.1:{server.port} in {server.start_seconds:.0f} s", flush=True)
    concurrency = regime["engine"].get("max_num_seqs") or 256
    cfg = from_dict({"engine": {"max_model_len": MAX_MODEL_LEN}, "sampling": {"max_tokens": args.max_tokens},
                     "openai": {"base_urls": [server.base_url + "/v1"], "served_model": SERVED_NAME,
                                "concurrency": concurrency}})
    client = OpenAIEngine(model, cfg)
    try:
        server.reset_prefix_cache()
    except OSError as e:
        server.stop()
        client.close()
        why = f"the server does not reset its prefix cache ({e}); runs would not start cold"
        print(f"[synth] skip serve-rounds / serve-pipelined: {why}", flush=True)
        return None, None, {"skipped": why}
    run_once(client, texts_warmup(), 2, args.max_tokens, exact=True, pipelined=True, server=server)
    return server, client, {"url": "127.0.0.1 (loopback), a free port", "start_seconds": server.start_seconds,
                            "concurrency": concurrency}


def texts_warmup() -> list[str]:
    return corpus_chunks(8)


def _measure(args: argparse.Namespace, texts: list[str], engines: dict, plans: dict, server: Any, client: Any,
             extra: dict) -> dict[tuple[str, int], list[dict]]:
    """Every configuration once per repeat, interleaved (odd repeats reversed); rewrite results each repeat."""
    samples: dict[tuple[str, int], list[dict]] = {}
    top = max(args.rounds)
    for repeat in range(args.repeats):
        # Odd repeats run the configurations in reverse, so a machine that drifts slower (or
        # faster) across a repeat favours no configuration over the medians.
        order: list[tuple[str, int, Any]] = []
        for rounds in args.rounds:
            for ngram, configs in plans.items():
                for name, how in configs:
                    order.append((name, rounds, lambda e=engines[ngram], r=rounds, h=how:
                                  run_once(e, texts, r, args.max_tokens, **h)))
            if rounds == args.rounds[0]:
                order.append(("plain-generate", 1, lambda: run_plain(engines[False], texts, args.max_tokens)))
            if rounds == top and client is not None:
                for name, pipelined in (("serve-rounds", False), ("serve-pipelined", True)):
                    order.append((name, rounds, lambda p=pipelined, r=rounds:
                                  run_once(client, texts, r, args.max_tokens, exact=True, pipelined=p, server=server)))
        for name, rounds, fn in order[::-1] if repeat % 2 else order:
            r = fn()
            samples.setdefault((name, rounds), []).append(r)
            hits = "n/a" if r["prefix_hit_rate"] is None else f"{r['prefix_hit_rate']:.0%}"
            print(f"repeat {repeat + 1} M={rounds} {name:15s} {r['tokens_per_s']:8.1f} tok/s "
                  f"{r['texts_per_s']:6.2f} texts/s generated {r['generated_tokens']} "
                  f"pairs/text {r['pairs_per_text']:.2f} carried {r['carried_entries']} "
                  f"failed {r['failed']} prefix hits {hits}", flush=True)
            # Rewritten after every run, so a run cut short keeps what it completed.
            _write(args, texts, samples, extra)
    return samples


def _row(name: str, params: dict, unit: str, key: str, base: dict, ours: dict, predicted: float | None) -> dict:
    from benchmarks.common import case

    skey = f"samples_{key}"
    return case(name, params, unit, base[key], ours[key], predicted_ratio=predicted,
                repeats=min(len(base[skey]), len(ours[skey])),
                spread={"baseline": [min(base[skey]), max(base[skey])], "ours": [min(ours[skey]), max(ours[skey])]},
                baseline_detail=base, ours_detail=ours)


def _write(args: argparse.Namespace, texts: list[str], samples: dict[tuple[str, int], list[dict]],
           extra: dict) -> Path:
    """Summarize the samples gathered so far and write the results file (and its notes)."""
    from benchmarks.common import write_results

    regime = REGIMES[args.regime]
    results = {key: summarize(runs) for key, runs in samples.items()}
    repeats = max(len(v) for v in samples.values())
    corpus = args.regime == "corpus"
    cases = []
    configurations: dict[str, dict[str, Any]] = {}
    plain = results.get(("plain-generate", 1))
    for rounds in args.rounds:
        if ("paper", rounds) not in results:
            continue
        base = results[("paper", rounds)]
        params = {"regime": args.regime, "rounds": rounds, "texts": len(texts), "max_tokens": args.max_tokens,
                  "max_model_len": MAX_MODEL_LEN, "repeats": repeats, "engine": regime["engine"]}
        for name in LADDER[1:]:
            if (name, rounds) not in results:
                continue
            ours = results[(name, rounds)]
            for unit, key in (("generated tokens/s", "tokens_per_s"), ("texts/s", "texts_per_s")):
                predicted = PREDICTED[args.regime][name][rounds] if key == "tokens_per_s" else None
                cases.append(_row(f"synthesize {name} M={rounds} ({unit})", params, unit, key, base, ours, predicted))
        pipelined = results.get(("+pipelined", rounds))
        if plain is not None and pipelined is not None:
            cases.append(_row(f"synthesize +pipelined M={rounds} vs plain LLM.generate, 1 round only (generated tokens/s)",
                              {**params, "baseline_rounds": 1}, "generated tokens/s", "tokens_per_s", plain, pipelined,
                              PREDICTED_BASELINES["plain-generate"].get(rounds) if corpus else None))
        s_rounds, s_pipe = results.get(("serve-rounds", rounds)), results.get(("serve-pipelined", rounds))
        if s_rounds is not None and s_pipe is not None:
            cases.append(_row(f"synthesize openai engine on vllm serve: pipelined vs round by round M={rounds} "
                              "(generated tokens/s)", {**params, "server": "vllm serve on 127.0.0.1"},
                              "generated tokens/s", "tokens_per_s", s_rounds, s_pipe,
                              PREDICTED_BASELINES["serve-rounds"].get(rounds) if corpus else None))
            cases.append(_row(f"synthesize +pipelined M={rounds}: offline engine vs openai engine on vllm serve "
                              "(generated tokens/s)", {**params, "server": "vllm serve on 127.0.0.1"},
                              "generated tokens/s", "tokens_per_s", s_pipe, pipelined,
                              PREDICTED_BASELINES["serve-pipelined"].get(rounds) if corpus else None))
        configurations[str(rounds)] = {
            name: {k: results[(name, r)][k] for k in ("tokens_per_s", "texts_per_s", "samples_tokens_per_s",
                                                      "prefix_hit_rate", "generated_tokens", "pairs_per_text")}
            for name in (*LADDER, *BASELINES)
            for r in ((1,) if name == "plain-generate" else (rounds,)) if (name, r) in results
        }
    suite = f"synthesize-{args.regime}" + ("-quick" if args.quick else "")
    return write_results(suite, cases, out_dir=args.out_dir,
                         extra={"model": "format-writing tiny Llama (ipt_engine.synth.format_model)",
                                "quick": bool(args.quick),
                                "configurations": configurations,
                                "notes": notes(configurations, extra),
                                **extra,
                                "predictions": "benchmarks/results/synthesize-predictions.md"})


def notes(configurations: dict[str, dict[str, Any]], extra: dict) -> str:
    """What the baselines are, and what the figures of this file say (regenerated with every write)."""
    lines = [
        "Baselines: `paper` is the paper's round-by-round procedure (one LLM.generate per round, string "
        "prompts, word-estimate budget); `plain-generate` is what a user writes without this project — "
        "one LLM.generate over every text's round-1 prompt, so it does ONE round only and is compared per "
        "generated token, not per text; `serve-rounds` / `serve-pipelined` are our openai engine against a "
        "local `vllm serve` (loopback), round by round and pipelined. Same model, texts, engine options "
        "and greedy decoding for all; ours is `+pipelined` (the shipped default; n-gram is off on CPU)."
    ]
    seen = []
    for m, conf in sorted(configurations.items()):
        tps = {name: row["tokens_per_s"] for name, row in conf.items()}
        ours, paper, plain = tps.get("+pipelined"), tps.get("paper"), tps.get("plain-generate")
        parts = []
        if ours and paper:
            parts.append(f"ours {ours:.0f} tok/s = {ours / paper:.2f}× paper ({paper:.0f})")
        if ours and plain:
            parts.append(f"{ours / plain:.2f}× plain 1-round generate ({plain:.0f})")
        sr, sp = tps.get("serve-rounds"), tps.get("serve-pipelined")
        if sr and sp:
            parts.append(f"through vllm serve pipelined {sp:.0f} = {sp / sr:.2f}× round by round ({sr:.0f})")
            if ours:
                parts.append(f"offline {ours / sp:.2f}× the server path")
        if parts:
            seen.append(f"M={m}: " + ", ".join(parts))
    server = extra.get("server") or {}
    if server.get("skipped"):
        seen.append(f"server baselines skipped: {server['skipped']}")
    if seen:
        lines.append("Seen (medians, generated tokens/s): " + "; ".join(seen) + ".")
    return "\n\n".join(lines)


def _draw(path: Path) -> None:
    """Draw the PNG here if matplotlib is importable, else with the train env's interpreter if present."""
    import subprocess

    try:
        print(plot(path))
        return
    except ImportError:
        pass
    train_python = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "python"
    if train_python.exists():
        r = subprocess.run([str(train_python), "-m", "benchmarks.synth", "--plot", str(path)],
                           cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True)
        if r.returncode == 0:
            print(r.stdout.strip())
            return
    print(f"no matplotlib here; draw the figure with: .venv/bin/python -m benchmarks.synth --plot {path}")


def plot(results_json: Path) -> Path:
    """Draw generated tokens/s per configuration, every repeat as a dot, next to the results file.

    One panel per M. Bars are medians (grey: the paper's procedure; blue: ours; orange: speculation;
    green: what users run instead — plain one-round generate and the openai engine on ``vllm serve``);
    the dashed line is the predicted median, so a reader sees at a glance which lever behaved as
    predicted and how far the repeats scatter.
    """
    import json
    import re

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doc = json.loads(Path(results_json).read_text())
    predicted: dict[tuple[int, str], float] = {}
    for c in doc["cases"]:
        ladder_row = re.match(r"^synthesize (\S+) M=\d+ \(generated tokens/s\)$", c["name"])
        if ladder_row and c.get("predicted_ratio"):
            predicted[(c["params"]["rounds"], ladder_row.group(1))] = c["predicted_ratio"]
    by_rounds = {int(m): conf for m, conf in doc["configurations"].items()}
    fig, axes = plt.subplots(1, len(by_rounds), figsize=(6.5 * len(by_rounds), 4.4), squeeze=False)
    labels = {"plain-generate": "plain generate\n(1 round)", "serve-rounds": "vllm serve\nrounds",
              "serve-pipelined": "vllm serve\npipelined"}
    for ax, (rounds, rows) in zip(axes[0], sorted(by_rounds.items())):
        names = [n for n in (*LADDER, *BASELINES) if n in rows]
        paper = rows["paper"]["tokens_per_s"]
        for x, name in enumerate(names):
            detail = rows[name]
            color = ("tab:gray" if name == "paper" else "tab:green" if name in BASELINES
                     else "tab:orange" if "ngram" in name else "tab:blue")
            ax.bar(x, detail["tokens_per_s"], color=color, alpha=0.6)
            dots = detail["samples_tokens_per_s"]
            ax.scatter([x] * len(dots), dots, color="k", s=10, zorder=3)
            if (rounds, name) in predicted:
                ax.hlines(paper * predicted[(rounds, name)], x - 0.4, x + 0.4, colors="k", linestyles="--",
                          linewidth=1)
            hits = detail.get("prefix_hit_rate")
            hit_text = "hits n/a" if hits is None else f"{hits:.0%} prefix\nhits"
            ax.text(x, paper * 0.05, f"{detail['tokens_per_s'] / paper:.2f}×\n{hit_text}",
                    ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(names)), [labels.get(n, n) for n in names], rotation=25, fontsize=7)
        ax.set_ylabel("generated tokens/s")
        ax.set_ylim(0, max(max(r["samples_tokens_per_s"]) for r in rows.values()) * 1.25)
        ax.set_title(f"M={rounds}: medians (bars), repeats (dots), predicted (dashed); ×: vs paper", fontsize=9)
    fig.suptitle(f"ipt synthesize vs the paper's procedure and what users run instead — "
                 f"{doc['env']['gpu'] or doc['env']['cpu']}", fontsize=10)
    from benchmarks.plots import save_beside

    return save_beside(fig, results_json)


if __name__ == "__main__":
    main()
