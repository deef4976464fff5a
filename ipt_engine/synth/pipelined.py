"""Drivers that run planned chains (:mod:`ipt_engine.synth.planner`) through an engine.

Two schedules over the same per-chain step, so they produce the same prompts and, under greedy
decoding, the same read collections:

- :func:`run_rounds` — the paper's procedure: every chain's round-r request is sent in one
  ``generate`` call (or in batches of ``batch_size``), and round r+1 starts when the slowest request of
  round r has finished. Works with any engine.
- :func:`run_pipelined` — chain-pipelined scheduling over vLLM's ``add_request`` / ``step`` loop: the
  moment a chain's request finishes, the chain's next request is added, so the batch never drains
  while a few long generations finish a round, and the next prompt — which starts with the previous
  prompt and its generation — arrives while that prefix is still in vLLM's prefix cache.

  Admission is ours, not the engine queue's: at most ``max_inflight`` requests (the engine's
  concurrent capacity, vLLM's ``max_num_seqs``) are in the engine at once, and a finished request's
  slot goes first to the same chain's next round, then to a chain not yet started. Handing everything
  to vLLM at once would queue a chain's round 2 behind every other chain's round 1 (first come, first
  served), by which time its prefix has been evicted on any corpus bigger than the KV cache — the
  same loss the paper's round-by-round procedure suffers.

Failures are isolated: a request vLLM refuses, an aborted request, or a failed ``generate`` call for a
batch marks only those chains' pending requests failed; the planner retries each once, then records
the text with no pairs, and the run goes on. An engine whose step loop keeps raising is broken, not
unlucky: after :data:`MAX_STEP_ERRORS` consecutive failed steps the error propagates and the part is
redone on ``--resume``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ipt_engine.synth.engines import Completion, RoundEngine, StepEngine
from ipt_engine.synth.planner import Chain, Request

MAX_STEP_ERRORS = 3
_FAILED_REASONS = {"abort", "error"}


@dataclass
class DriveStats:
    """What a driver did: requests served, tokens generated, failures seen, wall time."""

    requests: int = 0
    generated_tokens: int = 0
    failed_requests: int = 0
    unparsed: int = 0
    """Generations that yielded no well-formed pair (the parse-failure count)."""
    seconds: float = 0.0
    rounds: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    """Prompt tokens of the served requests, where the engine reports them."""
    cached_tokens: int = 0
    """Of those, the ones served from the engine's prefix cache (not computed again)."""

    def add(self, other: DriveStats) -> None:
        self.requests += other.requests
        self.generated_tokens += other.generated_tokens
        self.failed_requests += other.failed_requests
        self.unparsed += other.unparsed
        self.seconds += other.seconds
        self.prompt_tokens += other.prompt_tokens
        self.cached_tokens += other.cached_tokens

    def served(self, completion: Completion) -> None:
        """Count one served request's generated, prompt and cached tokens."""
        self.requests += 1
        self.generated_tokens += completion.tokens
        if completion.prompt_token_ids is not None:
            self.prompt_tokens += len(completion.prompt_token_ids)
        self.cached_tokens += completion.cached_tokens or 0

    @property
    def prefix_hit_rate(self) -> float | None:
        """Share of prompt tokens served from the prefix cache (None when the engine does not say)."""
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else None


# progress(requests finished, tokens generated) — called as work completes
Progress = Callable[[int, int], None]


def _ids(request: Request, engine: RoundEngine) -> list[int]:
    """The request's token ids: the planner's (counted with the engine's tokenizer) or encoded now."""
    return list(request.prompt_token_ids) if request.prompt_token_ids is not None else engine.encode(request.prompt)


def run_pipelined(chains: Sequence[Chain], engine: StepEngine, *, max_inflight: int | None = None,
                  progress: Progress | None = None) -> DriveStats:
    """Run ``chains`` to completion on an engine with ``submit`` / ``poll`` (see module docstring).

    ``max_inflight`` defaults to the engine's ``max_concurrency`` (None: no bound).
    """
    stats = DriveStats()
    t0 = time.perf_counter()
    inflight: dict[str, Chain] = {}
    window = max_inflight if max_inflight is not None else engine.max_concurrency
    waiting = deque(chains)  # chains not started yet, in order

    def launch(chain: Chain) -> bool:
        """Send the chain's next request; False when the chain is done. A refused request fails alone."""
        while True:
            request = chain.next_request()
            if request is None:
                return False
            try:
                request_id = engine.submit(_ids(request, engine), request.max_tokens)
            except Exception:  # vLLM refused this one prompt: fail it alone
                stats.failed_requests += 1
                chain.failed()
                continue
            inflight[request_id] = chain
            return True

    def fill() -> None:
        while waiting and (window is None or len(inflight) < window):
            launch(waiting.popleft())

    fill()
    step_errors = 0
    while inflight:
        try:
            finished = engine.poll()
            step_errors = 0
        except Exception:
            step_errors += 1
            if step_errors >= MAX_STEP_ERRORS:
                raise
            stuck = list(inflight.items())
            inflight.clear()
            engine.abort([rid for rid, _ in stuck])
            for _, chain in stuck:
                stats.failed_requests += 1
                chain.failed()
                launch(chain)
            fill()
            continue
        for request_id, completion in finished:
            done = inflight.pop(request_id, None)
            if done is None:
                continue  # a request aborted after a failed step, finishing late
            chain = done
            if completion.finish_reason in _FAILED_REASONS:
                stats.failed_requests += 1
                chain.failed()
            else:
                stats.unparsed += not chain.accept(completion.text)
                stats.served(completion)
                if progress is not None:
                    progress(1, completion.tokens)
            launch(chain)  # the same chain first: its prefix is in the cache now
        fill()
    stats.seconds = time.perf_counter() - t0
    return stats


def run_rounds(
    chains: Sequence[Chain], engine: RoundEngine, *, batch_size: int | None = None, progress: Progress | None = None
) -> DriveStats:
    """Run ``chains`` round by round, one ``complete`` call per batch of the round's requests."""
    stats = DriveStats()
    t0 = time.perf_counter()
    while True:
        pending = [(c, r) for c in chains if (r := c.next_request()) is not None]
        if not pending:
            break
        stats.rounds.append(len(pending))
        size = batch_size or len(pending)
        for start in range(0, len(pending), size):
            batch = pending[start : start + size]
            try:
                completions = engine.complete([_ids(r, engine) for _, r in batch], [r.max_tokens for _, r in batch])
                if len(completions) != len(batch):  # a chain without its answer would be asked again forever
                    raise RuntimeError(f"engine returned {len(completions)} completions for {len(batch)} prompts")
            except Exception:  # this batch only; its chains retry in the next pass
                stats.failed_requests += len(batch)
                for chain, _ in batch:
                    chain.failed()
                continue
            for (chain, _), completion in zip(batch, completions):
                if completion.finish_reason in _FAILED_REASONS:
                    stats.failed_requests += 1
                    chain.failed()
                    continue
                stats.unparsed += not chain.accept(completion.text)
                stats.served(completion)
            if progress is not None:
                progress(len(batch), sum(c.tokens for c in completions))
    stats.seconds = time.perf_counter() - t0
    return stats


def run_chains(chains: Sequence[Chain], engine: RoundEngine, *, scheduler: str = "auto",
               batch_size: int | None = None, progress: Progress | None = None) -> DriveStats:
    """Pick the schedule: pipelined where the engine supports it (``auto``), else round by round."""
    pipelined = scheduler == "pipelined" or (scheduler == "auto" and engine.supports_pipelining)
    if pipelined:
        if not (engine.supports_pipelining and isinstance(engine, StepEngine)):
            from ipt_engine.errors import UserError

            raise UserError(f"scheduler 'pipelined' needs --engine vllm or openai, not {engine.name}")
        return run_pipelined(chains, engine, progress=progress)
    return run_rounds(chains, engine, batch_size=batch_size, progress=progress)
