"""Held-out splits, the evaluation data built from read collections, and the comparison table."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipt_engine.data.split import hash_fraction, is_heldout, parse_split
from ipt_engine.errors import UserError


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=1), min_size=1, max_size=30), st.floats(0.01, 0.99))
def test_split_is_deterministic_and_disjoint(texts, fraction):
    held = [t for t in texts if is_heldout(t, fraction)]
    kept = [t for t in texts if not is_heldout(t, fraction)]
    assert not set(held) & set(kept)  # a text (and every copy of it) is on one side only
    assert len(held) + len(kept) == len(texts)
    assert held == [t for t in texts if hash_fraction(t) < fraction]  # the same decision every time
    assert all(0.0 <= hash_fraction(t) < 1.0 for t in texts)


def test_split_fraction_is_about_right_and_independent_of_order():
    texts = [f"document number {i}" for i in range(20000)]
    held = {t for t in texts if is_heldout(t, 0.05)}
    assert 0.04 < len(held) / len(texts) < 0.06
    assert held == {t for t in reversed(texts) if is_heldout(t, 0.05)}
    assert held <= {t for t in texts if is_heldout(t, 0.10)}  # a larger fraction only adds documents
    # a fixed value: the rule is the same on every machine and Python version
    assert hash_fraction("hello") == int.from_bytes(
        __import__("hashlib").blake2b(b"hello", digest_size=8).digest(), "big") / 2**64


def test_parse_split():
    s = parse_split("holdout=0.01")
    assert (s.name, s.fraction) == ("holdout", 0.01)
    assert str(s.sibling("out/shards/raw")) == "out/shards/raw-holdout"
    for bad in ("holdout", "holdout=x", "holdout=0", "holdout=1.5", "a/b=0.1"):
        with pytest.raises(UserError):
            parse_split(bad)


def _entry(context: str, inherit: bool = False) -> dict:
    return {"context": context, "QA_list": [{"Q": f"what is {context}?", "A": context.upper()}],
            "inherit_from_prev": inherit}


def test_split_collections_follows_the_raw_rule(tmp_path):
    from ipt_engine.eval.data import split_collections

    contexts = [f"text {i}" for i in range(60)]
    colls = [[_entry(contexts[i]), _entry(contexts[i + 1], True), _entry(contexts[i + 2], True)]
             for i in range(0, 60, 3)]
    src = tmp_path / "synth.jsonl"
    src.write_text("".join(json.dumps(c) + "\n" for c in colls))
    n_train, n_held = split_collections([src], 0.3, tmp_path / "train.jsonl", tmp_path / "held.jsonl")
    train = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    held = [json.loads(line) for line in (tmp_path / "held.jsonl").read_text().splitlines()]
    got_train = [e["context"] for c in train for e in c]
    got_held = [e["context"] for c in held for e in c]
    assert got_held == [c for c in contexts if is_heldout(c, 0.3)] and got_held
    assert got_train == [c for c in contexts if not is_heldout(c, 0.3)]
    assert (n_train, n_held) == (len(got_train), len(got_held))
    for side in (train, held):
        for coll in side:  # each side's collections start a run; inherit only from a kept neighbour
            assert coll[0]["inherit_from_prev"] is False
            for prev, cur in zip(coll, coll[1:]):
                if cur["inherit_from_prev"]:
                    assert contexts.index(cur["context"]) == contexts.index(prev["context"]) + 1


def test_qa_items_distractors_are_other_answers():
    from ipt_engine.eval.data import qa_items

    colls = [[_entry(f"text {i}") for i in range(6)],
             [{"context": "mc text", "QA_list": [{"Q": "Pick.\nOptions:\n- red\n- blue", "A": "blue"}]}]]
    mc, gen = qa_items(colls, n_choices=4)
    assert len(mc) == 7 and len(gen) == 6
    answers = {f"TEXT {i}" for i in range(6)}
    for item in mc[:6]:
        assert len(item["choices"]) == 4 and len(set(item["choices"])) == 4
        assert item["choices"][item["label"]] == item["context"].upper()
        assert set(item["choices"]) <= answers
    assert mc[6] == {"context": "mc text", "question": "Pick.", "choices": ["red", "blue"], "label": 1}
    assert qa_items(colls, n_choices=4) == (mc, gen)  # deterministic


def _result(model: str, tasks: dict) -> dict:
    return {"format": "ipt-eval", "version": 1, "model": model, "tasks": tasks}


def test_compare_table_hand_checked(tmp_path):
    from ipt_engine.eval.harness import load_result
    from ipt_engine.eval.report import compare_table, result_table

    a = _result("raw", {
        "qa": {"metrics": {"acc": {"value": 0.5, "stderr": 0.2887}}, "n": 4,
               "per_doc": {"acc": [[0, 1.0], [1, 0.0], [2, 1.0], [3, 0.0]]}},
        "hub": {"metrics": {"acc": {"value": 0.30, "stderr": 0.03}}, "n": 100, "per_doc": {}},
        "ppl": {"metrics": {"bits_per_byte": {"value": 2.5, "stderr": None}}, "n": 3, "per_doc": {}},
    })
    b = _result("augmented", {
        "qa": {"metrics": {"acc": {"value": 0.75, "stderr": 0.25}}, "n": 4,
               "per_doc": {"acc": [[0, 1.0], [1, 1.0], [2, 1.0], [3, 0.0]]}},
        "hub": {"metrics": {"acc": {"value": 0.34, "stderr": 0.04}}, "n": 100, "per_doc": {}},
        "ppl": {"metrics": {"bits_per_byte": {"value": 2.25, "stderr": None}}, "n": 3, "per_doc": {}},
    })
    for name, r in (("a", a), ("b", b)):
        (tmp_path / f"{name}.json").write_text(json.dumps(r))
    table = compare_table(load_result(tmp_path / "a.json"), load_result(tmp_path / "b.json"), ("raw", "ipt"))
    rows = table.splitlines()
    assert rows[3] == "| task | metric | raw | ipt | ipt − raw | stderr | |"
    # differences per document 0,1,0,0: mean 0.25, sample sd 0.5, paired stderr 0.5 / sqrt(4) = 0.25
    # independent: sqrt(0.03² + 0.04²) = 0.05; no stderr for bits per byte
    assert rows[5:] == [
        "| hub | acc | 0.3000 | 0.3400 | +0.0400 | 0.0500 | independent |",
        "| ppl | bits_per_byte | 2.5000 | 2.2500 | -0.2500 | — | |",
        "| qa | acc | 0.5000 | 0.7500 | +0.2500 | 0.2500 | paired |",
    ]
    assert "| qa | acc | 0.5000 | 0.2887 | 4 |" in result_table(a)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(UserError, match="not an `ipt eval` result file"):
        load_result(bad)


def test_paired_stderr_needs_the_same_documents():
    from ipt_engine.eval.report import paired_stderr

    assert paired_stderr([[0, 1.0], [1, 0.0]], [[0, 1.0], [2, 0.0]]) is None
    assert paired_stderr([[0, 1.0]], [[0, 0.0]]) is None
    se = paired_stderr([[0, 0.0], [1, 0.0], [2, 1.0]], [[0, 1.0], [1, 0.0], [2, 1.0]])
    assert se == pytest.approx(math.sqrt(((2 / 3) ** 2 + 2 * (1 / 3) ** 2) / 2 / 3))


def test_comparison_plot_and_heldout_table(tmp_path):
    pytest.importorskip("matplotlib")
    from ipt_engine.eval.experiment import heldout_table, plot_loss_curves, read_metrics

    def write(path, train, held):
        lines = [{"step": s, "loss/train/total": v} for s, v in enumerate(train)]
        lines += [{"step": s, f"metrics/{k}/LanguageCrossEntropy": v} for s, d in held.items() for k, v in d.items()]
        path.write_text("".join(json.dumps(x) + "\n" for x in lines))
        return path

    a = write(tmp_path / "a.jsonl", [10.4, 10.1, 9.8], {2: {"raw_holdout": 10.0, "aug_holdout": 10.2},
                                                         3: {"raw_holdout": 9.5, "aug_holdout": 9.9}})
    b = write(tmp_path / "b.jsonl", [10.4, 10.0, 9.6], {3: {"raw_holdout": 9.75, "aug_holdout": 9.4}})
    assert read_metrics(a)["metrics/raw_holdout/LanguageCrossEntropy"] == {2: 10.0, 3: 9.5}
    assert heldout_table({"raw": a, "ipt": b}).splitlines() == [
        "| held-out stream | raw | ipt | ipt − raw |",
        "|---|---:|---:|---:|",
        "| aug_holdout (loss) | 9.9000 | 9.4000 | -0.5000 |",
        "| raw_holdout (loss) | 9.5000 | 9.7500 | +0.2500 |",
    ]
    png = plot_loss_curves({"raw": a, "ipt": b}, tmp_path / "curves.png", title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
