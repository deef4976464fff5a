"""Round-by-round synthesis over any engine with ``generate(prompts) -> generations``.

This is the reference driver of :mod:`ipt_engine.synth.planner`: every step it asks each unfinished
chain for its next request, sends them to the engine as one batch, and hands each generation back to
its chain. When every text fits the budget, step r is exactly round r of the paper's procedure (same
prompts, same order, same ``inherit_from_prev`` groups); a split text only adds steps to its own chain.

A batch whose ``generate`` call raises (or returns the wrong number of generations) is marked failed for
every chain in it; the planner retries each once and then records the text with no pairs, so a flaky
engine costs pairs, never the run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from ipt_engine.synth.planner import plan_chains

log = logging.getLogger(__name__)


class Engine(Protocol):
    def generate(self, prompts: list[str]) -> list[str]: ...


def synthesize(
    texts: Sequence[str],
    engine: Engine,
    *,
    rounds: int,
    max_model_len: int = 4096,
    max_new_tokens: int = 400,
    tokenizer: Any = None,
) -> list[list[dict[str, Any]]]:
    """Synthesize pairs for ``texts`` in ``rounds``-shot chains; return one read collection per chain.

    ``tokenizer`` counts prompt lengths exactly (pass the synthesizer's, or the serving model's); without
    it the paper's 1.5 × words estimate is used and a warning says so.
    """
    chains = plan_chains(
        texts, rounds, max_model_len=max_model_len, max_new_tokens=max_new_tokens, tokenizer=tokenizer
    )
    while True:
        batch = [(chain, req) for chain in chains if (req := chain.next_request()) is not None]
        if not batch:
            break
        try:
            generations = list(engine.generate([req.prompt for _, req in batch]))
            if len(generations) != len(batch):
                raise RuntimeError(f"engine returned {len(generations)} generations for {len(batch)} prompts")
        except Exception as e:  # any engine failure: the items fail, the run goes on
            log.warning("generate failed for a batch of %d prompts: %s", len(batch), e)
            for chain, _ in batch:
                chain.failed()
            continue
        for (chain, _), generation in zip(batch, generations):
            chain.accept(generation)
    return [chain.entries() for chain in chains]
