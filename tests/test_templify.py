"""templify: hand-checked renderings per mode and pair kind, and properties over random collections."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipt_engine.templify import library as lib
from ipt_engine.templify import runs, templify
from ipt_engine.templify.pairs import parse_pair
from ipt_engine.templify.render import Style, draw_style, render_run
from ipt_engine.templify.template import placeholders

FREE = {"Q": "What purrs?", "A": "Cats"}
MC = {"Q": "Which one purrs?\nOptions:\n- dogs\n- cats", "A": "cats"}
COT = {"Q": "How many legs?\nLet's think step by step.", "A": "Cats have four.\nTherefore, the answer is 4"}
MC_COT = {"Q": "Legs?\nOptions:\n- 2\n- 4\nLet's think step by step.", "A": "Four legs.\nTherefore, the answer is 4"}


def style(mode, **kw):
    base = dict(
        mode=mode, inverted=False, free=lib.FREE_FORM[0], mc=lib.MULTIPLE_CHOICE[0], cot=lib.CHAIN_OF_THOUGHT[1],
        option_label=lib.OPTION_STYLES[1][0], option_symbols=lib.OPTION_STYLES[1][1], option_join="\n",
        answer_with_label=True, run_sep="\n\n\n",
    )
    base.update(kw)
    return Style(**base)


class NoExtra(random.Random):
    """An rng that never adds a 'none of the above' option, so renderings are fixed."""

    def randrange(self, *a, **k):
        return 99


def render(mode, entries, **kw):
    run = [(c, [parse_pair(q) for q in qa]) for c, qa in entries]
    return render_run(run, style(mode, **kw), NoExtra())


def test_pair_kinds():
    assert parse_pair(FREE).kind == "free"
    assert parse_pair(MC).kind == "mc" and parse_pair(MC).options == ["dogs", "cats"]
    assert parse_pair(COT).kind == "cot" and parse_pair(COT).reasoning == "Cats have four."
    assert parse_pair(MC_COT).kind == "mc_cot" and parse_pair(MC_COT).answer == "4"
    broken = {"Q": "Q?\nLet's think step by step.", "A": "no final answer"}
    assert parse_pair(broken).kind == "free" and parse_pair(broken).question == broken["Q"]


def test_classic_each_pair_kind():
    out = render("classic", [("Cats purr.", [FREE, MC, COT, MC_COT])], intro=lib.READ_INTROS[0])
    assert out == (
        "Cats purr.\n\n"
        "Question: What purrs?\nAnswer: Cats\n\n"
        "Question: Which one purrs?\nOptions:\n(A) dogs\n(B) cats\nAnswer: (B) cats\n\n"
        "Question: How many legs?\nAnswer: Cats have four.\nSo the answer is 4\n\n"
        "Question: Legs?\nOptions:\n(A) 2\n(B) 4\nAnswer: Four legs.\nSo the answer is (B) 4"
    )


def test_classic_run_of_two_entries_and_inversion():
    out = render("classic", [("One.", [FREE]), ("Two.", [FREE])], intro=lib.READ_INTROS[4])
    assert out == "Passage:\nOne.\n\nQuestion: What purrs?\nAnswer: Cats\n\n\nPassage:\nTwo.\n\nQuestion: What purrs?\nAnswer: Cats"
    out = render("classic", [("One.", [FREE])], inverted=True, inversion=lib.INVERSIONS[1])
    assert out == "Question: What purrs?\nAnswer: Cats\n\nSource text:\nOne."


def test_dialog():
    out = render("dialog", [("Cats purr.", [FREE, MC])], dialog=lib.DIALOGS[1], answer_with_label=False)
    assert out == "Cats purr.\n\nStudent: What purrs?\nTeacher: Cats\nStudent: Which one purrs?\nOptions:\n(A) dogs\n(B) cats\nTeacher: cats"


def test_numbered():
    out = render("numbered", [("Cats purr.", [FREE, COT])], layout=lib.NUMBERED[1], number_label=lib.NUMBER_LABELS[0])
    assert out == (
        "Cats purr.\n\nQuestions:\n1. What purrs?\n2. How many legs?\n\n"
        "Answers:\n1. Cats\n2. Cats have four.\nSo the answer is 4"
    )


def test_inline():
    out = render("inline", [("Cats purr.", [COT, FREE])], inline=lib.INLINE[1])
    assert out == (
        "Cats purr.\n\nHere are some solved examples.\n"
        "Q: How many legs?\nA: 4\nRationale: Cats have four.\n"
        "Q: What purrs?\nA: Cats"
    )


def test_next_turn():
    out = render("next_turn", [("Cats purr.", [FREE, MC])], dialog=lib.DIALOGS[0], layout=lib.NEXT_TURN[2],
                 option_symbols=None, option_label=lib.OPTION_STYLES[11][0], answer_with_label=False)
    assert out == (
        "Cats purr.\n\nDialog history:\nUser: What purrs?\nAssistant: Cats\n\n"
        "Next turn:\nUser: Which one purrs?\nOptions:\n- dogs\n- cats\nAssistant: cats"
    )


def test_none_of_the_above_sometimes_added_and_never_the_answer():
    seen = 0
    for seed in range(300):
        (text,) = templify([{"context": "c", "QA_list": [MC], "inherit_from_prev": False}], seed)
        seen += any(x in text for x in lib.NONE_OF_THE_ABOVE)
        assert "cats" in text and "dogs" in text
    assert 10 <= seen <= 60


def test_library_sizes_and_fields():
    assert len(lib.FREE_FORM) >= 40 and len(lib.MULTIPLE_CHOICE) >= 30 and len(lib.CHAIN_OF_THOUGHT) >= 30
    assert len(lib.NUMBERED) >= 8 and len(lib.DIALOGS) >= 8 and len(lib.INLINE) >= 10
    for p in lib.FREE_FORM:
        assert p.q_body.fields == {"question"} and p.a_body.fields == {"answer"}
    for p in lib.MULTIPLE_CHOICE:
        assert p.q_body.fields == {"question", "options"} and p.a_body.fields == {"answer"}
    for p in lib.CHAIN_OF_THOUGHT:
        assert "question" in p.q_body.fields and p.a_body.fields == {"reasoning", "answer"}


def test_runs_and_raw_text():
    coll = [
        {"context": "raw", "QA_list": [], "inherit_from_prev": False},
        {"context": "A", "QA_list": [FREE], "inherit_from_prev": True},
        {"context": "B", "QA_list": [FREE], "inherit_from_prev": False},
        {"context": "   ", "QA_list": [], "inherit_from_prev": False},
    ]
    assert [[e["context"] for e in r] for r in runs(coll)] == [["raw", "A"], ["B"], ["   "]]
    texts = templify(coll, 1)
    assert texts[0] == "raw" and len(texts) == 3


def test_bad_collection_raises_value_error():
    with pytest.raises(ValueError, match="entry 0: QA_list\\[0\\] has no string 'A'"):
        templify([{"context": "x", "QA_list": [{"Q": "q"}]}], 0)


def test_mode_weights():
    counts = Counter()
    rng = random.Random()
    for _ in range(4000):
        counts[draw_style(rng, 2).mode] += 1
    assert counts["classic"] / 4000 == pytest.approx(0.80, abs=0.04)
    for m in ("dialog", "numbered", "inline", "next_turn"):
        assert 0.02 < counts[m] / 4000 < 0.09
    assert {draw_style(rng, 1).mode for _ in range(500)} == {"classic", "dialog"}


# ---- properties ----------------------------------------------------------------------------------
_word = st.text("abcdefghij XYZ.,?", min_size=1, max_size=12).map(str.strip).filter(bool)


@st.composite
def qa(draw):
    kind = draw(st.sampled_from(["free", "mc", "cot", "mc_cot"]))
    q, a = draw(_word), draw(_word)
    if kind in ("mc", "mc_cot"):
        opts = draw(st.lists(_word, min_size=1, max_size=5, unique_by=str.casefold))
        a = draw(st.sampled_from(opts)) if draw(st.booleans()) else a
        q = q + "\nOptions:\n- " + "\n- ".join(opts)
    if kind in ("cot", "mc_cot"):
        q, a = q + "\nLet's think step by step.", draw(_word) + "\nTherefore, the answer is " + a
    return {"Q": q, "A": a}


@st.composite
def collections(draw):
    n = draw(st.integers(1, 5))
    return [
        {"context": f"<{i}> " + draw(_word), "QA_list": draw(st.lists(qa(), max_size=4)),
         "inherit_from_prev": i > 0 and draw(st.booleans())}
        for i in range(n)
    ]


def _needles(q):
    p = parse_pair(q)
    out = [p.question, p.answer] + (p.options or []) + ([p.reasoning] if p.reasoning else [])
    return out


@settings(max_examples=300, deadline=None)
@given(collections(), st.integers(0, 2**32))
def test_properties(coll, seed):
    texts = templify(coll, seed)
    assert texts == templify(coll, seed)  # same seed, same texts
    for t in texts:
        assert not placeholders(t)  # no field of any template leaks
    for run in runs(coll):
        with_pairs = [e for e in run if e["QA_list"]]
        if not with_pairs:
            continue
        # the entries of a run appear in one text, in order, with all their pieces
        holders = [t for t in texts if all(e["context"] in t for e in with_pairs)]
        assert holders
        text = holders[0]
        pos = 0
        for e in with_pairs:
            for q in e["QA_list"]:
                for needle in _needles(q):
                    assert needle in text
            found = text.find(e["context"])
            assert found >= pos  # contexts are unique (numbered), so order is checkable
            pos = found
        for e in run:
            if not e["QA_list"] and e["context"].strip():
                assert e["context"] in texts


def test_100_seeds_give_at_least_20_distinct_texts():
    coll = [{"context": "Cats purr.", "QA_list": [FREE, MC], "inherit_from_prev": False},
            {"context": "Dogs bark.", "QA_list": [COT, FREE], "inherit_from_prev": True}]
    distinct = {tuple(templify(coll, s)) for s in range(100)}
    assert len(distinct) >= 20
