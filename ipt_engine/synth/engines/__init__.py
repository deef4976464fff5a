"""Engines behind one small protocol, selected by ``--engine vllm|hf|openai``.

Every engine receives **token ids** — the prompt tokenized once, without added special tokens, so it
starts with exactly one BOS (:func:`ipt_engine.synth.prompt.encode_prompt`) — and returns text plus the
number of tokens it generated. Sending ids instead of strings matters twice: a string prompt that
already starts with ``<s>`` gets a second BOS from vLLM's or the server's tokenizer, and ids counted
once by the planner are exactly what the model receives, so no request is rejected or truncated for
length and nothing is tokenized twice.

What each driver needs is a :class:`typing.Protocol`: :class:`RoundEngine` (``complete`` on a batch,
for :func:`ipt_engine.synth.pipelined.run_rounds`) and :class:`StepEngine` (``submit`` / ``poll`` /
``abort`` and ``max_concurrency``, for :func:`~ipt_engine.synth.pipelined.run_pipelined`). The engines
here subclass :class:`Engine`, which provides ``encode``, ``generate`` and ``close`` on top of
``complete``; test doubles and benchmark wrappers only need the protocol's members.

Heavy libraries (vllm, torch, transformers) are imported by the engine modules, never here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ipt_engine.errors import UserError
from ipt_engine.synth.config import SynthConfig

ENGINES = ("vllm", "hf", "openai")


@dataclass(frozen=True)
class Completion:
    """One generation: its text and how many tokens the model produced for it."""

    text: str
    tokens: int
    finish_reason: str | None = None
    prompt_token_ids: tuple[int, ...] | None = None
    """What the engine reports it received, where it says (vLLM does): the one-BOS check reads it."""
    cached_tokens: int | None = None
    """How many leading prompt tokens the engine served from its prefix cache, where it says (vLLM)."""


@runtime_checkable
class RoundEngine(Protocol):
    """What the round-by-round driver needs: batched generation on token ids."""

    @property
    def name(self) -> str: ...

    @property
    def supports_pipelining(self) -> bool: ...

    def encode(self, prompt: str) -> list[int]:
        """The prompt's token ids, with exactly one BOS (for requests the planner did not tokenize)."""
        ...

    def complete(self, prompts: Sequence[Sequence[int]], max_tokens: Sequence[int]) -> list[Completion]:
        """Generate for each prompt at most ``max_tokens[i]`` tokens; one completion per prompt, in order."""
        ...


@runtime_checkable
class StepEngine(RoundEngine, Protocol):
    """What the pipelined driver needs on top: requests in one at a time, finished ones out per step."""

    @property
    def max_concurrency(self) -> int | None:
        """Requests the engine runs at once (the driver admits no more); None: no bound."""
        ...

    def submit(self, prompt: Sequence[int], max_tokens: int) -> str:
        """Queue one request; its id comes back from :meth:`poll` when it finishes."""
        ...

    def poll(self) -> list[tuple[str, Completion]]:
        """Advance the engine one step; the requests that finished in it."""
        ...

    def abort(self, request_ids: list[str]) -> None:
        """Drop these requests (after a failed step); a late finish of one is ignored."""
        ...


class Engine:
    """Base class of the engines: ``complete`` on token ids is the one method a subclass must provide.

    ``supports_pipelining`` engines also implement the rest of :class:`StepEngine`.
    """

    name: str = "engine"
    tokenizer: Any = None
    supports_pipelining: bool = False

    def complete(self, prompts: Sequence[Sequence[int]], max_tokens: Sequence[int]) -> list[Completion]:
        """Generate for each prompt (token ids, one BOS) at most ``max_tokens[i]`` tokens."""
        raise NotImplementedError

    def encode(self, prompt: str) -> list[int]:
        from ipt_engine.synth.prompt import encode_prompt

        return encode_prompt(prompt, self.tokenizer)

    def generate(self, prompts: list[str], max_tokens: int | None = None) -> list[str]:
        """String prompts in, generations out (tokenized here, once, with exactly one BOS)."""
        ids = [self.encode(p) for p in prompts]
        budget = max_tokens if max_tokens is not None else self.default_max_tokens
        return [c.text for c in self.complete(ids, [budget] * len(ids))]

    default_max_tokens = 400

    def close(self) -> None:
        """Release the engine's resources (GPU memory, connections)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_engine(kind: str, model: str, config: SynthConfig | None = None) -> Engine:
    """Build the engine ``kind`` for ``model`` (a local directory or a hub id) with ``config``."""
    config = config or SynthConfig()
    if kind == "vllm":
        from ipt_engine.synth.engines.vllm_engine import VLLMEngine

        return VLLMEngine(model, config)
    if kind == "hf":
        from ipt_engine.synth.engines.hf_engine import HFEngine

        return HFEngine(model, config)
    if kind == "openai":
        from ipt_engine.synth.engines.openai_engine import OpenAIEngine

        return OpenAIEngine(model, config)
    raise UserError(f"unknown engine {kind!r} (expected one of {', '.join(ENGINES)})")
