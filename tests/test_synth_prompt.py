"""The synthesizer prompt format: byte-exact rendering and exactly one BOS in the token ids."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ipt_engine.synth.parse import parse_pairs
from ipt_engine.synth.prompt import (
    encode_prompt,
    render_context,
    render_example,
    render_pairs,
    render_prompt,
)
from tests.fixtures_synth import mistral_tokenizer  # noqa: F401

PAIRS = [{"Q": "What is it?", "A": "A cat."}, {"Q": "Where?", "A": "Home"}]


def test_context_bytes():
    assert render_context("Cats purr.") == "<s> <CON> Cats purr. </CON>\n\n"


def test_pairs_bytes():
    assert render_pairs(PAIRS) == "<QUE> What is it? <ANS> A cat. </END>\n\n<QUE> Where? <ANS> Home </END>"
    assert render_pairs([]) == ""


def test_example_bytes():
    assert render_example("T", PAIRS[:1]) == "<s> <CON> T </CON>\n\n<QUE> What is it? <ANS> A cat. </END></s>"


def test_prompt_bytes_oldest_first():
    history = [("one", PAIRS[:1]), {"context": "two", "QA_list": PAIRS[1:]}]
    assert render_prompt(history, "three") == (
        "<s> <CON> one </CON>\n\n<QUE> What is it? <ANS> A cat. </END></s>"
        "<s> <CON> two </CON>\n\n<QUE> Where? <ANS> Home </END></s>"
        "<s> <CON> three </CON>\n\n"
    )
    assert render_prompt([], "x") == render_context("x")


def test_encode_matches_legacy_mistral(mistral_tokenizer):  # noqa: F811
    ids = encode_prompt("<s> <CON> hi", mistral_tokenizer)
    assert ids[:5] == [1, 28705, 523, 3185, 28767]
    assert ids.count(1) == 1


def test_encode_single_bos_where_plain_call_doubles_it(mistral_tokenizer):  # noqa: F811
    prompt = render_context("hello world")
    plain = mistral_tokenizer(prompt)["input_ids"]  # what a string prompt gets from vLLM
    assert plain[:2] == [1, 1]
    ids = encode_prompt(prompt, mistral_tokenizer)
    assert ids[0] == 1 and ids[1] != 1
    assert ids == plain[1:]


def test_encode_adds_bos_when_missing(mistral_tokenizer):  # noqa: F811
    assert encode_prompt("hello", mistral_tokenizer) == [1, *mistral_tokenizer("hello", add_special_tokens=False)["input_ids"]]


def test_encode_multi_round_has_one_bos_per_example(mistral_tokenizer):  # noqa: F811
    prompt = render_prompt([("a b", PAIRS), ("c", PAIRS[:1])], "d")
    ids = encode_prompt(prompt, mistral_tokenizer)
    assert ids[0] == 1 and ids[1] != 1
    assert ids.count(1) == 3 and ids.count(2) == 2  # <s> per example, </s> per earlier example


_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)
_clean = _text.filter(lambda s: s.strip() == s and s and all(m not in s for m in ("<", ">")))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_clean, _clean), max_size=6))
def test_rendered_pairs_parse_back(pairs):
    """Whatever pairs we render, the parser reads back (de-duplicated case-insensitively)."""
    qa = [{"Q": q, "A": a} for q, a in pairs]
    expected, seen = [], set()
    for p in qa:
        if p["Q"].lower() not in seen:
            seen.add(p["Q"].lower())
            expected.append(p)
    assert parse_pairs(render_pairs(qa)) == expected


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(_text, st.lists(st.tuples(_clean, _clean), max_size=3)), max_size=4), _text)
def test_prompt_is_concatenation(history, text):
    hist = [(t, [{"Q": q, "A": a} for q, a in ps]) for t, ps in history]
    prompt = render_prompt(hist, text)
    assert prompt == "".join(render_example(t, p) for t, p in hist) + render_context(text)
    assert prompt.count("</s>") >= len(hist) and prompt.endswith(" </CON>\n\n")
