"""Multi-round planning: chain layout, history carrying, splitting, retries, token-exact lengths."""

from __future__ import annotations

import math
import re
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipt_engine.synth.planner import (
    PromptMeasure,
    WordEstimate,
    chain_layout,
    make_measure,
    plan_chains,
    split_to_fit,
)
from ipt_engine.synth.prompt import encode_prompt, render_context, render_example
from tests.fixtures_synth import mistral_tokenizer  # noqa: F401

GOOD = "<QUE> q{n} <ANS> a{n} </END>"


def words(s: str) -> int:
    return len(s.split())


def plan(texts, rounds, **kw):
    kw.setdefault("count_tokens", words)
    return plan_chains(texts, rounds, **kw)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 60), st.integers(1, 12))
def test_layout_partitions_texts_as_the_paper_does(n, m):
    chains = chain_layout(n, m)
    assert sorted(i for c in chains for i in c) == list(range(n))
    width = math.ceil(n / m) if n else 0
    assert len(chains) == width
    for i, c in enumerate(chains):
        assert c == list(range(i, n, width))
        assert len(c) <= m


def test_layout_last_round_empty_works():
    assert chain_layout(5, 4) == [[0, 2, 4], [1, 3]]  # the paper's scripts crash here
    with pytest.raises(ValueError):
        chain_layout(3, 0)


def test_history_carried_while_pairs_and_fit():
    (chain,) = plan(["t0", "t1", "t2", "t3"], 4, max_model_len=1000, max_new_tokens=10)
    r = chain.next_request()
    assert (r.prompt, r.history, r.item) == (render_context("t0"), 0, 0)
    chain.accept(GOOD.format(n=0))
    r = chain.next_request()
    assert r.prompt == render_example("t0", [{"Q": "q0", "A": "a0"}]) + render_context("t1")
    assert r.history == 1
    chain.accept("no pairs at all")
    r = chain.next_request()  # t1 produced nothing: history restarts
    assert (r.prompt, r.history) == (render_context("t2"), 0)
    chain.accept(GOOD.format(n=2))
    r = chain.next_request()
    assert r.history == 1 and r.prompt.startswith("<s> <CON> t2 </CON>")
    chain.accept(GOOD.format(n=3))
    assert chain.next_request() is None and chain.done
    e = chain.entries()
    assert [x["inherit_from_prev"] for x in e] == [False, False, False, True]  # t1 had no pairs
    assert [x["followed_by_next"] for x in e] == [True, False, True, False]
    assert [x["context"] for x in e] == ["t0", "t1", "t2", "t3"]
    assert e[1]["QA_list"] == []


def test_history_dropped_whole_when_it_does_not_fit():
    texts = ["a " * 30, "b " * 30, "c " * 30]
    (chain,) = plan(texts, 3, max_model_len=90, max_new_tokens=10)  # two examples fit, three do not
    for n in range(3):
        r = chain.next_request()
        assert r.prompt_length <= 80
        chain.accept(GOOD.format(n=n))
    e = chain.entries()
    assert [x["inherit_from_prev"] for x in e] == [False, True, False]
    assert [x["followed_by_next"] for x in e] == [True, False, False]


def test_next_request_is_idempotent_and_accept_needs_a_request():
    (chain,) = plan(["x", "y"], 2)
    with pytest.raises(RuntimeError):
        chain.accept("")
    assert chain.next_request() is chain.next_request()


def test_failed_retries_once_then_records_raw_text():
    (chain,) = plan(["x", "y"], 2)
    first = chain.next_request()
    assert chain.failed() is True
    again = chain.next_request()
    assert again.prompt == first.prompt and again.attempt == 1
    assert chain.failed() is False
    assert chain.entries() == [{"context": "x", "QA_list": [], "inherit_from_prev": False, "followed_by_next": False}]
    r = chain.next_request()
    assert r.item == 1 and r.history == 0


def test_empty_texts_are_never_sent():
    chains = plan(["", "  \n", "real"], 3)
    (chain,) = chains
    r = chain.next_request()
    assert r.item == 2
    chain.accept(GOOD.format(n=1))
    assert [e["context"] for e in chain.entries()] == ["", "  \n", "real"]


def test_word_estimate_warns_and_is_the_papers():
    with pytest.warns(UserWarning, match="1.5 x words"):
        chains = plan_chains(["one two three"], 1)
    assert chains[0].next_request().prompt_length == len(render_context("one two three").split(" ")) * 1.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan_chains(["x"], 1, count_tokens=len)


def test_budget_too_small_is_refused():
    with pytest.raises(ValueError, match="no room"):
        plan(["x"], 1, max_model_len=10, max_new_tokens=10)


_para = st.lists(st.text("abc ", min_size=1, max_size=8).map(str.strip).filter(bool), min_size=1, max_size=12).map(
    lambda ws: " ".join(ws) + "."
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_para, min_size=1, max_size=8).map("\n\n".join), st.integers(12, 40))
def test_split_pieces_fit_and_keep_every_character(text, budget):
    measure = WordEstimate()
    pieces = split_to_fit(text, measure, budget)
    assert all(measure.count(render_context(p)) <= budget for p in pieces)
    assert re.sub(r"\s", "", "".join(pieces)) == re.sub(r"\s", "", text)


def test_split_prefers_paragraphs_then_sentences():
    paras = ["First one. Second one.", "Third one here. Fourth.", "Fifth and last."]
    measure = make_measure(count_tokens=words)
    budget = int(measure.count(render_context(paras[0]))) + 1
    pieces = split_to_fit("\n\n".join(paras), measure, budget)
    assert pieces == paras
    pieces = split_to_fit("\n\n".join(paras), measure, budget - 2)
    assert pieces[:2] == ["First one.", "Second one."]


def test_tokens_not_words_for_cjk(mistral_tokenizer):  # noqa: F811
    text = "。".join(["機械学習は計算機科学の一分野である"] * 60) + "。"
    estimate = plan_chains([text], 1, max_model_len=1024, max_new_tokens=400, count_tokens=lambda s: len(s.split(" ")) * 1.5)
    assert len(estimate[0].segments) == 1  # the estimate thinks it fits: it has few spaces
    (chain,) = plan_chains([text], 1, max_model_len=1024, max_new_tokens=400, tokenizer=mistral_tokenizer)
    assert len(chain.segments) > 1  # it does not
    while (r := chain.next_request()) is not None:
        assert r.prompt_token_ids == encode_prompt(r.prompt, mistral_tokenizer)
        assert r.prompt_length == len(r.prompt_token_ids) <= 624
        assert r.prompt_token_ids[0] == 1 and r.prompt_token_ids[1] != 1
        chain.accept(GOOD.format(n=r.step))
    assert "".join(e["context"] for e in chain.entries()) == text
    assert [e["inherit_from_prev"] for e in chain.entries()][0] is False


def test_every_request_fits_with_real_tokenizer(mistral_tokenizer):  # noqa: F811
    import inspect

    corpus = [inspect.getdoc(f) or "" for f in (re.sub, math.gcd, split_to_fit, plan_chains, str.split)]
    corpus.append("def f(x):\n    return [i ** 2 for i in range(x)]\n" * 40)
    chains = plan_chains(corpus, 3, max_model_len=512, max_new_tokens=128, tokenizer=mistral_tokenizer)
    sent = 0
    while True:
        batch = [c.next_request() for c in chains]
        batch = [(c, r) for c, r in zip(chains, batch) if r is not None]
        if not batch:
            break
        for c, r in batch:
            assert len(encode_prompt(r.prompt, mistral_tokenizer)) <= 512 - 128
            c.accept(GOOD.format(n=r.step))
            sent += 1
    assert sent > len(corpus)  # the long code text was split
    assert sorted({i for c in chains for i in c.items}) == list(range(len(corpus)))


class _WordsAndPunctuation(PromptMeasure):
    """A cheap monotone length: words plus punctuation marks (stands in for a tokenizer)."""

    def measure(self, prompt):
        return len(re.findall(r"\w+|[^\w\s]", prompt)), None


def _greedy_reference(text, measure, budget):
    """Unit-by-unit greedy growth (the obvious quadratic algorithm), paragraphs then sentences then words."""
    from ipt_engine.synth import planner as p

    def fits(piece):
        return measure.count(p.render_context(piece.strip())) <= budget

    def split(t, level):
        if fits(t):
            return [t]
        if level == len(p._LEVELS):
            return p._split_chars(t, measure, budget)
        units = p._cut(t, p._LEVELS[level])
        if len(units) <= 1:
            return split(t, level + 1)
        out, cur = [], ""
        for u in units:
            if cur and fits(cur + u):
                cur += u
                continue
            if cur:
                out.append(cur)
            if fits(u):
                cur = u
            else:
                out.extend(split(u, level + 1))
                cur = ""
        if cur:
            out.append(cur)
        return out

    if fits(text):
        return [text]
    return [s for s in (x.strip() for x in split(text, 0)) if s]


@given(
    st.lists(st.lists(st.lists(st.text(alphabet="abcdefgh ,", min_size=1, max_size=12), min_size=1, max_size=6)
                      .map(lambda ws: " ".join(ws) + "."), min_size=1, max_size=6)
             .map(" ".join), min_size=1, max_size=8).map("\n\n".join),
    st.integers(12, 60),
)
@settings(max_examples=150, deadline=None)
def test_split_to_fit_equals_unit_by_unit_greedy(text, budget):
    m = _WordsAndPunctuation()
    assert split_to_fit(text, m, budget) == _greedy_reference(text, m, budget)
