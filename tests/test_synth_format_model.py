"""The format model's training data: what it learns to write is what the next round's prompt holds."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipt_engine.synth.format_model import (
    Recipe,
    cloze_pairs,
    continuation_ids,
    corpus_texts,
    length_batches,
    long_texts,
    training_examples,
)
from ipt_engine.synth.parse import parse_pairs
from ipt_engine.synth.prompt import encode_prompt, render_example, render_pairs, render_prompt
from tests.fixtures_synth import mistral_tokenizer  # noqa: F401


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return corpus_texts()


def test_targets_are_the_whole_strings_continuation(texts, mistral_tokenizer):  # noqa: F811
    # A generation the model learned must be exactly the ids the next round's prompt has in that place,
    # or the prefix cache could never serve a generation again: prompt + target == tokenize(whole).
    examples = training_examples(texts[:60], mistral_tokenizer, Recipe(max_long_words=200))
    assert examples
    eos = mistral_tokenizer.eos_token_id
    for prompt, target in examples:
        assert target[-1] == eos and eos not in target[:-1]
        assert mistral_tokenizer.convert_ids_to_tokens(target[0]) == "<"  # not the word-initial "▁<"
        text = mistral_tokenizer.decode(prompt + target, skip_special_tokens=False)
        assert "<QUE>" in text and text.rstrip().endswith("</s>")


def test_next_round_prompt_starts_with_previous_prompt_and_generation(texts, mistral_tokenizer):  # noqa: F811
    rng = random.Random(3)
    first, second = texts[10], texts[11]
    pairs = cloze_pairs(first, rng)
    prompt = encode_prompt(render_prompt([], first), mistral_tokenizer)
    generated = continuation_ids(prompt, encode_prompt(render_prompt([], first) + render_pairs(pairs), mistral_tokenizer))
    following = encode_prompt(render_example(first, pairs) + render_prompt([], second), mistral_tokenizer)
    done = prompt + generated + [mistral_tokenizer.eos_token_id]
    assert following[: len(done)] == done


def test_continuation_refuses_a_non_prefix():
    with pytest.raises(ValueError):
        continuation_ids([1, 5, 6], [1, 5, 7, 8])


def test_long_texts_join_consecutive_paragraphs(texts):
    joined = long_texts(texts, random.Random(0), 300)
    assert joined and all(len(t.split()) <= 300 for t in joined)
    assert all(t.count("\n\n") >= 1 for t in joined)
    paragraphs = set(texts)
    assert all(all(p in paragraphs for p in t.split("\n\n")) for t in joined)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 6))
def test_cloze_pairs_are_well_formed_and_in_reading_order(texts, seed, max_pairs):
    text = "\n\n".join(texts[seed % 200 : seed % 200 + 4])
    pairs = cloze_pairs(text, random.Random(seed), max_pairs)
    assert 0 < len(pairs) <= max_pairs
    assert parse_pairs(render_pairs(pairs)) == pairs
    for p in pairs:
        assert "____" in p["Q"] and p["A"].isalpha()
    # In reading order: filling each blank back in gives a run of the text's words, each found after
    # the previous one.
    flat, start = " ".join(text.split()), 0
    for p in pairs:
        sentence = p["Q"].split(": ", 1)[1] if p["Q"].startswith(("Fill", "Complete")) else p["Q"].split("? ", 1)[1]
        at = flat.find(sentence.replace("____", p["A"], 1), start)
        assert at >= start, (sentence, p["A"])
        start = at + 1


def test_length_batches_cover_each_example_once_sorted_by_length():
    examples = [([1] * random.Random(i).randint(1, 50), [2]) for i in range(37)]
    batches = length_batches(examples, 8)
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat)) == 32 and all(len(b) == 8 for b in batches)
    lengths = [len(examples[i][0]) for i in flat]
    assert lengths == sorted(lengths)
