"""The transformers fallback engine (train env or synth env): one BOS, batching, budgets, errors."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from ipt_engine.errors import UserError  # noqa: E402
from ipt_engine.synth.config import from_dict  # noqa: E402
from ipt_engine.synth.engines import make_engine  # noqa: E402
from ipt_engine.synth.prompt import render_context, render_prompt  # noqa: E402


@pytest.fixture(scope="module")
def hf_engine(tmp_path_factory):
    from ipt_engine.assets import tiny_model_dir

    model = tiny_model_dir("llama", cache_dir=tmp_path_factory.mktemp("assets"))
    cfg = from_dict({"engine": {"max_model_len": 256, "dtype": "float32", "batch_size": 3},
                     "sampling": {"max_tokens": 6}})
    engine = make_engine("hf", str(model), cfg)
    if len(engine.tokenizer) < 32000:
        pytest.skip("this transformers version builds the Mistral tokenizer without its vocabulary")
    yield engine
    engine.close()


PROMPTS = [
    render_context("A deque supports appends and pops from either end."),
    render_prompt([("Lists are mutable.", [{"Q": "Are lists mutable?", "A": "Yes."}])], "Tuples are not."),
    render_context("Short."),
    render_context("The json module encodes and decodes JSON documents, " * 3),
]


def test_model_sees_exactly_one_bos(hf_engine):
    seen = []
    handle = hf_engine.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["input_ids"]), with_kwargs=True
    )
    try:
        hf_engine.generate(PROMPTS)
    finally:
        handle.remove()
    bos = hf_engine.tokenizer.bos_token_id
    prefills = [ids for ids in seen if ids.shape[1] > 1]  # the first forward of each batch
    pad = hf_engine.pad_id
    assert pad != bos
    rows = [_strip_left(r, pad) for ids in prefills for r in ids.tolist()]
    assert len(rows) == len(PROMPTS)
    for prompt, real in zip(PROMPTS, rows):
        assert real[0] == bos and real[1] != bos  # one BOS in front, never two
        assert real.count(bos) == prompt.count("<s>")  # and one per example, as the synthesizer was trained


def _strip_left(row, pad):
    """A left-padded row without its padding (prompts start with BOS, never with the pad id)."""
    start = 0
    while row[start] == pad:
        start += 1
    return row[start:]


def test_batched_generation_matches_one_by_one(hf_engine):
    ids = [hf_engine.encode(p) for p in PROMPTS]
    together = hf_engine.complete(ids, [6, 3, 6, 1])
    alone = [hf_engine.complete([i], [m])[0] for i, m in zip(ids, [6, 3, 6, 1])]
    assert [c.text for c in together] == [c.text for c in alone]
    assert [c.tokens for c in together] == [c.tokens for c in alone]
    assert all(c.tokens <= m for c, m in zip(together, [6, 3, 6, 1]))


def test_over_budget_prompt_is_refused_not_truncated(hf_engine):
    too_long = [hf_engine.tokenizer.bos_token_id] + [1000] * 255
    with pytest.raises(ValueError, match="max_model_len"):
        hf_engine.complete([too_long], [6])


def test_runs_the_round_by_round_driver(hf_engine):
    from ipt_engine.synth.pipelined import run_chains
    from ipt_engine.synth.planner import plan_chains

    texts = ["Sets hold unique items.", "Dicts map keys to values.", "Strings are immutable."]
    chains = plan_chains(texts, 2, max_model_len=256, max_new_tokens=6, tokenizer=hf_engine.tokenizer)
    stats = run_chains(chains, hf_engine, scheduler="auto")
    assert stats.requests == 3 and stats.rounds == [2, 1]
    assert [e["context"] for c in chains for e in c.entries()] == [texts[0], texts[2], texts[1]]
    with pytest.raises(UserError, match="pipelined"):
        run_chains(plan_chains(texts, 1, tokenizer=hf_engine.tokenizer), hf_engine, scheduler="pipelined")


def test_missing_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError):
        make_engine("hf", str(tmp_path / "nope"), from_dict({}))
    with pytest.raises(UserError, match="unknown engine"):
        make_engine("tgi", "x", from_dict({}))
