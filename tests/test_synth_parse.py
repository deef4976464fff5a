"""parse_pairs: hand-checked cases, and it never raises on any string."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from ipt_engine.synth.parse import parse_pairs


def test_well_formed():
    gen = "<QUE> What is A? <ANS> A letter. </END>\n\n<QUE> Why? <ANS> Because. </END>"
    assert parse_pairs(gen) == [{"Q": "What is A?", "A": "A letter."}, {"Q": "Why?", "A": "Because."}]


def test_trailing_unfinished_pair_dropped():
    assert parse_pairs("<QUE> a <ANS> b </END>\n\n<QUE> c <ANS> d") == [{"Q": "a", "A": "b"}]
    assert parse_pairs("<QUE> a <ANS> b </END>  \n") == [{"Q": "a", "A": "b"}]


def test_malformed_pairs_skipped():
    gen = (
        "<QUE> two <ANS> x <ANS> y </END>"  # two <ANS>
        "no question marker <ANS> z </END>"  # no <QUE>
        "<QUE> empty answer <ANS>   </END>"  # empty answer
        "<QUE>  <ANS> empty question </END>"  # empty question
        "<QUE> run on <ANS> x <QUE> y </END>"  # lost its </END>
        "<QUE> echo <ANS> <CON> text </CON> </END>"  # echoes the prompt
        "<QUE> no answer marker </END>"
        "<QUE> good <ANS> one </END>"
    )
    assert parse_pairs(gen) == [{"Q": "good", "A": "one"}]


def test_questions_deduplicated_case_insensitively_first_kept():
    gen = "<QUE> Who? <ANS> me </END><QUE> WHO? <ANS> you </END><QUE> who?  <ANS> them </END>"
    assert parse_pairs(gen) == [{"Q": "Who?", "A": "me"}]


def test_multiline_content_kept():
    gen = "<QUE> Pick\nOptions:\n- a\n- b <ANS> a\nsince a </END>"
    assert parse_pairs(gen) == [{"Q": "Pick\nOptions:\n- a\n- b", "A": "a\nsince a"}]


def test_non_strings_give_nothing():
    for value in (None, 3, b"<QUE> a <ANS> b </END>", ["x"]):
        assert parse_pairs(value) == []  # type: ignore[arg-type]
    assert parse_pairs("") == []


_PIECES = ["<QUE>", "<ANS>", "</END>", "</s>", "<s>", " ", "\n", "a", "Q", "é", "\x00", "<", ">", "END", "\u2028"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_PIECES) | st.text(max_size=5), max_size=30))
def test_never_raises_and_output_is_clean(pieces):
    pairs = parse_pairs("".join(pieces))
    seen = set()
    for p in pairs:
        assert set(p) == {"Q", "A"} and p["Q"] and p["A"]
        assert p["Q"] == p["Q"].strip() and p["A"] == p["A"].strip()
        assert not any(m in p["Q"] + p["A"] for m in ("<QUE>", "<ANS>", "</END>"))
        assert p["Q"].lower() not in seen
        seen.add(p["Q"].lower())


def test_never_raises_on_1e5_random_strings():
    rng = random.Random()  # fresh inputs every run
    alphabet = _PIECES + ["x", "y", "?", "\t", "\ud800"]
    for _ in range(100_000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
        assert isinstance(parse_pairs(s), list)
