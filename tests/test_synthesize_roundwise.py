"""The round-by-round driver (plan_chains + run_rounds) against an independent reference of the
paper's procedure: same prompts, same batches, same inherit_from_prev groups; failures cost pairs only."""

from __future__ import annotations

import hashlib
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipt_engine.synth.engines import Completion, Engine
from ipt_engine.synth.pipelined import run_rounds
from ipt_engine.synth.planner import plan_chains


# ---- an independent reference of the paper's procedure (1.5 x words, whole history or none) --------
def _ctx(t):
    return "<s> <CON> " + t + " </CON>\n\n"


def _example(e):
    return _ctx(e["context"]) + "\n\n".join(f"<QUE> {p['Q']} <ANS> {p['A']} </END>" for p in e["QA_list"]) + "</s>"


def reference(texts, m, max_model_len, max_new_tokens, generate):
    from ipt_engine.synth.parse import parse_pairs

    n = len(texts)
    width = math.ceil(n / m)
    collections: list[list[dict]] = [[] for _ in range(width)]
    batches = []
    for r in range(m):
        current = texts[r * width : (r + 1) * width]
        if not current:
            break
        prompts = []
        for i, text in enumerate(current):
            coll = collections[i]
            prompt = _ctx(text)
            if coll and coll[-1]["QA_list"]:
                j = len(coll) - 1
                while j > 0 and coll[j]["inherit_from_prev"]:
                    j -= 1
                candidate = "".join(_example(e) for e in coll[j:]) + _ctx(text)
                fits = len(candidate.split(" ")) * 1.5 <= max_model_len - max_new_tokens
                coll[-1]["followed_by_next"] = fits
                prompt = candidate if fits else prompt
            elif coll:
                coll[-1]["followed_by_next"] = False
            prompts.append(prompt)
        batches.append(prompts)
        for i, (text, gen) in enumerate(zip(current, generate(prompts))):
            coll = collections[i]
            pairs = parse_pairs(gen)
            inherit = bool(coll) and coll[-1].get("followed_by_next", False) and bool(pairs)
            coll.append({"context": text, "QA_list": pairs, "inherit_from_prev": inherit})
    return batches, collections


def fake_generation(prompt: str) -> str:
    """Deterministic in the prompt: 0-3 pairs, sometimes an unfinished one after them."""
    h = hashlib.sha256(prompt.encode()).digest()
    out = [f"<QUE> q{h[i]} about it? <ANS> a{h[i + 4]} </END>" for i in range(h[0] % 4)]
    if h[1] % 3 == 0:
        out.append("<QUE> cut off <ANS> mid")
    return "\n\n".join(out)


class Recorder(Engine):
    """A RoundEngine double: prompts travel as code points (encode/decode are exact), generations come
    from :func:`fake_generation`; ``fail_first`` calls (or every call) raise as a broken engine would."""

    name = "recorder"

    def __init__(self, fail_first: int = 0, fail_always: bool = False):
        self.batches: list[list[str]] = []
        self.fail_first, self.fail_always = fail_first, fail_always

    def encode(self, prompt):
        return [ord(c) for c in prompt]

    def answer(self, prompts):
        return [fake_generation(p) for p in prompts]

    def complete(self, prompts, max_tokens):
        texts = ["".join(map(chr, ids)) for ids in prompts]
        self.batches.append(texts)
        if self.fail_always or len(self.batches) <= self.fail_first:
            raise RuntimeError("engine down")
        return [Completion(text=t, tokens=len(t.split()), finish_reason="stop") for t in self.answer(texts)]


def synthesize(texts, engine, *, rounds, max_model_len=4096, max_new_tokens=400, tokenizer=None):
    """The stage's round-by-round path on ``texts``: plan the chains, run them, their read collections."""
    chains = plan_chains(texts, rounds, max_model_len=max_model_len, max_new_tokens=max_new_tokens,
                         tokenizer=tokenizer)
    run_rounds(chains, engine)
    return [chain.entries() for chain in chains]


_word = st.sampled_from("alpha beta gamma delta the of and code 42 x".split())
_texts = st.lists(st.lists(_word, min_size=1, max_size=12).map(" ".join), min_size=1, max_size=14)


@settings(max_examples=200, deadline=None)
@given(_texts, st.integers(1, 6), st.integers(60, 160))
def test_same_prompts_and_groups_as_the_paper(texts, m, max_model_len):
    n = len(texts)
    width = math.ceil(n / m)
    if n - (m - 1) * width <= 0:
        m = math.ceil(n / width)  # the paper crashes when its last round is empty; compare what it runs
    engine = Recorder()
    with pytest.warns(UserWarning):
        ours = synthesize(texts, engine, rounds=m, max_model_len=max_model_len, max_new_tokens=20)
    batches, theirs = reference(texts, m, max_model_len, 20, lambda ps: [fake_generation(p) for p in ps])
    assert engine.batches == batches
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert [(e["context"], e["QA_list"], e["inherit_from_prev"]) for e in a] == [
            (e["context"], e["QA_list"], e["inherit_from_prev"]) for e in b
        ]
        assert [e["followed_by_next"] for e in a[:-1]] == [e["followed_by_next"] for e in b[:-1]]
        assert a[-1]["followed_by_next"] is False


@pytest.mark.filterwarnings("ignore:no tokenizer given")
def test_any_n_and_m():
    rng = random.Random()
    for n in range(0, 12):
        for m in range(1, 8):
            texts = [f"text {i} " + "w " * rng.randrange(5) for i in range(n)]
            out = synthesize(texts, Recorder(), rounds=m, tokenizer=None) if n else []
            assert sorted(e["context"] for c in out for e in c) == sorted(texts)


def test_failed_batch_retried_once():
    engine = Recorder(fail_first=1)
    with pytest.warns(UserWarning):
        out = synthesize(["a", "b", "c", "d"], engine, rounds=2)
    assert engine.batches[0] == engine.batches[1]  # the retry
    clean = synthesize(["a", "b", "c", "d"], Recorder(), rounds=2, max_model_len=4096)
    assert out == clean


def test_engine_always_failing_never_ends_the_run():
    engine = Recorder(fail_always=True)
    with pytest.warns(UserWarning):
        out = synthesize(["a", "b", "c"], engine, rounds=3)
    assert out == [[{"context": t, "QA_list": [], "inherit_from_prev": False, "followed_by_next": False} for t in "abc"]]
    assert len(engine.batches) == 6  # every request tried twice


def test_wrong_number_of_generations_is_a_failure():
    class Short(Recorder):
        def answer(self, prompts):
            return ["<QUE> q <ANS> a </END>"][: len(prompts) - 1]

    with pytest.warns(UserWarning):
        out = synthesize(["a", "b"], Short(), rounds=1)
    assert all(e["QA_list"] == [] for c in out for e in c)
