"""Rendering one run of entries (joined by ``inherit_from_prev``) as one few-shot text.

A run is drawn one :class:`Style` (mode, patterns, labels, separators) and every entry of the run is
rendered with it: a few-shot text is only a demonstration if its examples share a format. Styles are
drawn from one ``random.Random`` per collection, so the same seed always gives the same texts.

Modes (weights in :mod:`ipt_engine.templify.library`):

- ``classic``: the passage, then its pairs;
- ``dialog``: the passage, then the pairs as a two-speaker conversation;
- ``numbered``: the passage, all questions numbered, then all answers numbered;
- ``inline``: the passage, all pairs but the last as solved examples, the last as the exercise;
- ``next_turn``: the passage, a conversation, then its next exchange.

``classic`` and ``dialog`` are rarely inverted (pairs first, passage after).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ipt_engine.templify import library as lib
from ipt_engine.templify.library import PairPattern
from ipt_engine.templify.pairs import Pair, answer_index
from ipt_engine.templify.template import Template


@dataclass(slots=True)
class Style:
    """Every choice made for one run."""

    mode: str
    inverted: bool
    free: PairPattern
    mc: PairPattern
    cot: PairPattern
    option_label: Template
    option_symbols: tuple[str, ...] | None
    option_join: str
    answer_with_label: bool
    run_sep: str
    intro: tuple[Template, str] | None = None
    inversion: Template | None = None
    dialog: tuple[str, str, str, str] | None = None
    layout: Template | None = None
    number_label: Template | None = None
    inline: tuple[Template, Template, Template, Template, str] | None = None


def _weighted(rng: random.Random, table: tuple[tuple[str, int], ...]) -> str:
    total = sum(w for _, w in table)
    x = rng.random() * total
    for name, w in table:
        x -= w
        if x < 0:
            return name
    return table[-1][0]


def draw_style(rng: random.Random, min_pairs: int) -> Style:
    """Draw the style of a run whose entries have at least ``min_pairs`` pairs each."""
    mode = _weighted(rng, lib.MODES_MANY_PAIRS if min_pairs >= 2 else lib.MODES_FEW_PAIRS)
    label, symbols = rng.choice(lib.OPTION_STYLES)
    style = Style(
        mode=mode,
        inverted=mode in ("classic", "dialog") and rng.randrange(100) < lib.INVERSION_PERCENT,
        free=rng.choice(lib.FREE_FORM),
        mc=rng.choice(lib.MULTIPLE_CHOICE),
        cot=rng.choice(lib.CHAIN_OF_THOUGHT),
        option_label=label,
        option_symbols=symbols,
        option_join=rng.choice(lib.OPTION_JOINS),
        answer_with_label=symbols is not None and rng.random() < 0.5,
        run_sep=rng.choice(lib.RUN_SEPARATORS),
    )
    if style.inverted:
        style.inversion = rng.choice(lib.INVERSIONS)
    if mode == "classic":
        style.intro = rng.choice(lib.READ_INTROS)
    elif mode in ("dialog", "next_turn"):
        style.dialog = rng.choice(lib.DIALOGS)
        if mode == "next_turn":
            style.layout = rng.choice(lib.NEXT_TURN)
    elif mode == "numbered":
        style.layout = rng.choice(lib.NUMBERED)
        style.number_label = rng.choice(lib.NUMBER_LABELS)
    else:
        style.inline = rng.choice(lib.INLINE)
    return style


# ---- one pair ------------------------------------------------------------------------------------


def _options(pair: Pair, style: Style, rng: random.Random) -> tuple[str, str]:
    """The rendered option list and the rendered answer (label + text, or the text alone)."""
    assert pair.options is not None
    options = list(pair.options)
    symbols = style.option_symbols
    if (symbols is None or len(options) < len(symbols)) and rng.randrange(100) < lib.NONE_OF_THE_ABOVE_PERCENT:
        extra = rng.choice(lib.NONE_OF_THE_ABOVE)
        if all(o.casefold() != extra.casefold() for o in options):
            options.append(extra)
    labels = []
    for i in range(len(options)):
        if symbols is None:
            labels.append(style.option_label.fill({}))
        else:  # more options than symbols: number on, so every label stays distinct
            labels.append(style.option_label.fill({"l": symbols[i] if i < len(symbols) else str(i + 1)}))
    join = style.option_join if symbols is not None else "\n"  # bullets only read well one per line
    rendered = join.join(lab + o for lab, o in zip(labels, options))
    k = answer_index(pair)
    if k is None:
        return rendered, pair.answer
    answer = options[k]
    return rendered, (labels[k] + answer).strip() if style.answer_with_label else answer


def pair_bodies(pair: Pair, style: Style, rng: random.Random, *, reasoning: bool = True) -> tuple[str, str, PairPattern]:
    """(question body, answer body, the pattern whose prefixes go with them) for one pair.

    With ``reasoning=False`` a chain-of-thought pair renders as its plain kind (the inline layout shows
    the reasoning in a line of its own).
    """
    values = {"question": pair.question, "answer": pair.answer}
    if pair.options is not None:
        values["options"], values["answer"] = _options(pair, style, rng)
        q_pattern = style.mc
    else:
        q_pattern = style.free if pair.reasoning is None or not reasoning else style.cot
    if pair.reasoning is not None and reasoning:
        values["reasoning"] = pair.reasoning
        a_pattern = style.cot
    else:
        a_pattern = q_pattern
    pattern = q_pattern if a_pattern is q_pattern else PairPattern(
        q_pattern.q_prefix, q_pattern.q_body, a_pattern.a_prefix, a_pattern.a_body, q_pattern.joint, q_pattern.sep
    )
    return q_pattern.q_body.fill(values), a_pattern.a_body.fill(values), pattern


def _qa_block(pairs: list[Pair], style: Style, rng: random.Random) -> str:
    out = []
    for pair in pairs:
        q, a, p = pair_bodies(pair, style, rng)
        out.append(f"{p.q_prefix}{q}{p.joint}{p.a_prefix}{a}")
    return style.free.sep.join(out)


def _turns(pairs: list[Pair], style: Style, rng: random.Random) -> str:
    assert style.dialog is not None
    _, asker, answerer, sep = style.dialog
    out = []
    for pair in pairs:
        q, a, _ = pair_bodies(pair, style, rng)
        out.append(f"{asker}{q}{sep}{answerer}{a}")
    return sep.join(out)


# ---- one entry, per mode -------------------------------------------------------------------------


def _classic(context: str, pairs: list[Pair], style: Style, rng: random.Random) -> str:
    block = _qa_block(pairs, style, rng)
    if style.inversion is not None:
        return style.inversion.fill({"pairs": block, "context": context})
    assert style.intro is not None
    intro, between = style.intro
    return intro.fill({"context": context}) + between + block


def _dialog(context: str, pairs: list[Pair], style: Style, rng: random.Random) -> str:
    turns = _turns(pairs, style, rng)
    if style.inversion is not None:
        return style.inversion.fill({"pairs": turns, "context": context})
    assert style.dialog is not None
    return context + style.dialog[0] + turns


def _numbered(context: str, pairs: list[Pair], style: Style, rng: random.Random) -> str:
    assert style.layout is not None and style.number_label is not None
    questions, answers = [], []
    for n, pair in enumerate(pairs, start=1):
        q, a, _ = pair_bodies(pair, style, rng)
        label = style.number_label.fill({"n": str(n)})
        questions.append(label + q)
        answers.append(label + a)
    return style.layout.fill(
        {"context": context, "questions": "\n".join(questions), "answers": "\n".join(answers),
         "count": str(len(pairs))}
    )


def _inline(context: str, pairs: list[Pair], style: Style, rng: random.Random) -> str:
    assert style.inline is not None
    head, example, explained, test, sep = style.inline
    shots = []
    for pair in pairs[:-1]:
        q, a, _ = pair_bodies(pair, style, rng, reasoning=False)
        if pair.reasoning is None:
            shots.append(example.fill({"input": q, "output": a}))
        else:
            shots.append(explained.fill({"input": q, "output": a, "reasoning": pair.reasoning}))
    q, a, _ = pair_bodies(pairs[-1], style, rng)
    return head.fill({"context": context}) + sep.join(shots) + sep + test.fill({"input": q, "output": a})


def _next_turn(context: str, pairs: list[Pair], style: Style, rng: random.Random) -> str:
    assert style.layout is not None
    return style.layout.fill(
        {"context": context, "dialog": _turns(pairs[:-1], style, rng), "next": _turns(pairs[-1:], style, rng)}
    )


_MODES = {
    "classic": _classic,
    "dialog": _dialog,
    "numbered": _numbered,
    "inline": _inline,
    "next_turn": _next_turn,
}


def render_run(run: list[tuple[str, list[Pair]]], style: Style, rng: random.Random) -> str:
    """One few-shot text from the entries of a run (each with at least one pair), in order."""
    fn = _MODES[style.mode]
    return style.run_sep.join(fn(context, pairs, style, rng) for context, pairs in run)
