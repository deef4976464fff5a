"""Multi-round (M-shot) planning as a per-chain state machine.

The paper turns N raw texts into M-shot examples by running the synthesizer in M rounds: texts are cut
into rounds of B = ⌈N/M⌉, and *chain* i holds texts i, B+i, 2B+i, ... Round r of a chain is prompted
with the chain's earlier rounds (context + pairs + ``</s>``, oldest first) in front of its new text, so
the synthesizer sees worked examples, and the resulting entries are later rendered as one few-shot text.

Instead of a loop over rounds, this module exposes one :class:`Chain` per chain that answers two
questions: *what is my next request?* and *here is its generation, update yourself*. The round-by-round
driver (:func:`ipt_engine.synth.pipelined.run_rounds`) and the pipelined one that keeps the GPU full
by sending a chain's next round as soon as its previous one returns both drive the same code, so they
cannot disagree on prompts or on the ``inherit_from_prev`` groups.

API::

    chains = plan_chains(texts, rounds, max_model_len=4096, max_new_tokens=400, tokenizer=tok)
    for chain in chains:                 # in any interleaving across chains
        req = chain.next_request()       # Request | None (None: the chain is done)
        ...                              # req.prompt, req.prompt_token_ids, req.max_tokens, req.item
        chain.accept(generation_text)    # or chain.failed() when the engine could not serve it
    collection = chain.entries()         # the read collection, released corpora's format

``next_request`` is idempotent: it returns the same pending request until ``accept`` or ``failed`` is
called. ``failed`` retries the request once; a second failure records the text as raw text with no pairs
and moves on, so a bad batch never ends a run.

Semantics kept from the released pipeline (and its corpora):

- the carried history is the chain's last entry if it produced at least one pair, and then, walking
  back, every entry reached through ``inherit_from_prev``; it is carried whole or not at all, and only
  when the whole prompt fits in ``max_model_len - max_new_tokens``;
- ``followed_by_next`` on an entry says its successor's prompt carried it; ``inherit_from_prev`` on an
  entry says it was prompted with its predecessor *and* produced at least one pair, so the two belong
  in one few-shot text.

Where we differ, on purpose:

- lengths are counted in the synthesizer tokenizer's tokens (:func:`encode_prompt`) when a tokenizer is
  given; the 1.5 × words estimate of the paper's scripts, wrong for code and CJK, is the fallback and
  warns;
- a text too long to fit alone is split at paragraph, then sentence, then word boundaries (then
  characters, for unbroken runs) into pieces that fit; the pieces become consecutive entries of the
  chain (the paper's scripts send it anyway, and the engine rejects or truncates it);
- any N and M work; every chain yields its own collection (the paper's scripts fold chains that ended
  early into the last round's collections, and crash when the last round is empty, e.g. N=5, M=4);
- a text that is empty or only whitespace is recorded with no pairs and never sent.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ipt_engine.synth.parse import parse_pairs
from ipt_engine.synth.prompt import encode_prompt, render_context, render_prompt

# How many times a request is sent again after the engine failed to serve it.
RETRIES = 1


# --------------------------------------------------------------------------------------------------
# Length counting
# --------------------------------------------------------------------------------------------------


class PromptMeasure:
    """Counts a prompt's length; subclasses decide how, and may hand out the token ids they made."""

    def measure(self, prompt: str) -> tuple[int | float, list[int] | None]:
        raise NotImplementedError

    def count(self, prompt: str) -> int | float:
        return self.measure(prompt)[0]


class TokenizerMeasure(PromptMeasure):
    """Exact length in the given tokenizer's tokens, with exactly one BOS (what the model receives)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def measure(self, prompt: str) -> tuple[int, list[int]]:
        ids = encode_prompt(prompt, self.tokenizer)
        return len(ids), ids


class WordEstimate(PromptMeasure):
    """The paper's estimate: 1.5 × the number of space-separated fields. Cheap, and wrong for code/CJK."""

    def measure(self, prompt: str) -> tuple[float, None]:
        return len(prompt.split(" ")) * 1.5, None


class CallableMeasure(PromptMeasure):
    def __init__(self, fn: Callable[[str], int]) -> None:
        self.fn = fn

    def measure(self, prompt: str) -> tuple[int, None]:
        return int(self.fn(prompt)), None


def make_measure(tokenizer: Any = None, count_tokens: Callable[[str], int] | None = None) -> PromptMeasure:
    """Pick how lengths are counted: ``count_tokens`` if given, else ``tokenizer``, else the estimate."""
    if count_tokens is not None:
        return CallableMeasure(count_tokens)
    if tokenizer is not None:
        return TokenizerMeasure(tokenizer)
    warnings.warn(
        "no tokenizer given: prompt lengths are estimated as 1.5 x words (the paper's rule), which "
        "undercounts code and CJK text; pass the synthesizer's tokenizer for exact counts",
        stacklevel=3,
    )
    return WordEstimate()


# --------------------------------------------------------------------------------------------------
# Splitting texts that do not fit alone
# --------------------------------------------------------------------------------------------------

_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE = re.compile(r"(?<=[.!?;:])\s+|(?<=[。！？；])")
_WORD = re.compile(r"\s+")


def _cut(text: str, pattern: re.Pattern[str]) -> list[str]:
    """Cut ``text`` after each match of ``pattern``, keeping every character (separators go left)."""
    pieces, last = [], 0
    for m in pattern.finditer(text):
        if m.end() > last:
            pieces.append(text[last : m.end()])
            last = m.end()
    if last < len(text):
        pieces.append(text[last:])
    return [p for p in pieces if p]


def _fits(piece: str, measure: PromptMeasure, budget: int) -> bool:
    return measure.count(render_context(piece.strip())) <= budget


def _split_chars(text: str, measure: PromptMeasure, budget: int) -> list[str]:
    """Longest prefixes that fit, by binary search: the last resort for unbroken runs of characters."""
    pieces = []
    while text:
        lo, hi = 1, len(text)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if _fits(text[:mid], measure, budget):
                lo = mid
            else:
                hi = mid - 1
        pieces.append(text[:lo])
        text = text[lo:]
    return pieces


_LEVELS = (_PARAGRAPH, _SENTENCE, _WORD)


def _split(text: str, measure: PromptMeasure, budget: int, level: int) -> list[str]:
    if _fits(text, measure, budget):
        return [text]
    if level == len(_LEVELS):
        return _split_chars(text, measure, budget)
    units = _cut(text, _LEVELS[level])
    if len(units) <= 1:
        return _split(text, measure, budget, level + 1)
    # Greedy packing of consecutive units, each piece as long as fits. Growing a piece one unit at a
    # time and re-counting it would be quadratic in the text's length (a module-length document took
    # tens of seconds); instead the piece length is found by galloping then bisecting on the number of
    # units, O(log n) exact counts per piece. Token counts grow with the text, so this finds the same
    # pieces as unit-by-unit growth.
    pieces: list[str] = []
    i = 0
    while i < len(units):
        if not _fits(units[i], measure, budget):
            pieces.extend(_split(units[i], measure, budget, level + 1))
            i += 1
            continue
        n = len(units) - i

        def fits(k: int, i: int = i) -> bool:
            return _fits("".join(units[i : i + k]), measure, budget)

        lo, hi, step = 1, 0, 1  # lo units fit; hi units do not (0: not found yet)
        while not hi:
            cand = min(lo + step, n)
            if cand == lo:
                hi = n + 1
            elif fits(cand):
                lo, step = cand, step * 2
            else:
                hi = cand
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if fits(mid):
                lo = mid
            else:
                hi = mid
        pieces.append("".join(units[i : i + lo]))
        i += lo
    return pieces


def split_to_fit(text: str, measure: PromptMeasure, budget: int) -> list[str]:
    """Pieces of ``text`` whose contexts each fit ``budget``; cut at paragraphs, sentences, words, chars.

    Pieces are stripped of surrounding whitespace; apart from whitespace at the cuts, they hold every
    character of ``text``, in order. Greedy packing keeps pieces as large as the budget allows, so the
    synthesizer sees as much context as it can.
    """
    if _fits(text, measure, budget):
        return [text]
    pieces = (p.strip() for p in _split(text, measure, budget, 0))
    return [p for p in pieces if p]


# --------------------------------------------------------------------------------------------------
# Chains
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One prompt for the synthesizer.

    ``chain`` and ``step`` say where the generation goes (``step`` is the entry's position in the chain's
    read collection); ``item`` is the index of the source text in the planned ``texts`` and ``piece`` the
    piece of it (0 unless it was split). ``prompt_token_ids`` are given when lengths are counted with a
    tokenizer: send those, not the string, so the model sees exactly one BOS. ``history`` is the number
    of earlier examples carried in front; they form a prefix shared with the chain's previous prompt,
    which a prefix cache can reuse.
    """

    chain: int
    step: int
    item: int
    piece: int
    prompt: str
    prompt_token_ids: list[int] | None
    prompt_length: int | float
    max_tokens: int
    history: int
    attempt: int = 0


@dataclass(frozen=True)
class Segment:
    """One entry-to-be of a chain: a text, or a piece of one too long to fit alone."""

    item: int
    piece: int
    text: str


@dataclass
class Chain:
    """The state of one chain; see the module docstring for the protocol."""

    index: int
    segments: list[Segment]
    measure: PromptMeasure
    budget: int
    max_new_tokens: int
    _entries: list[dict[str, Any]] = field(default_factory=list)
    _pending: Request | None = None
    _attempt: int = 0

    @property
    def done(self) -> bool:
        return len(self._entries) == len(self.segments)

    @property
    def items(self) -> list[int]:
        """Indices of the source texts in this chain, in order (one per text, even when split)."""
        return list(dict.fromkeys(s.item for s in self.segments))

    def _history(self) -> list[dict[str, Any]]:
        """The earlier entries to carry: the last one if it has pairs, and its inherit_from_prev run."""
        if not self._entries or not self._entries[-1]["QA_list"]:
            return []
        start = len(self._entries) - 1
        while start > 0 and self._entries[start]["inherit_from_prev"]:
            start -= 1
        return self._entries[start:]

    def _record(self, pairs: list[dict[str, str]], carried: bool) -> None:
        segment = self.segments[len(self._entries)]
        if self._entries:
            self._entries[-1]["followed_by_next"] = carried
        self._entries.append(
            {
                "context": segment.text,
                "QA_list": pairs,
                "inherit_from_prev": carried and bool(pairs),
                "followed_by_next": False,
            }
        )
        self._pending = None
        self._attempt = 0

    def next_request(self) -> Request | None:
        """The request for the chain's next entry, or None when the chain is done."""
        while self._pending is None:
            if self.done:
                return None
            segment = self.segments[len(self._entries)]
            if not segment.text.strip():
                self._record([], carried=False)  # nothing to read: nothing to ask
                continue
            history = self._history()
            prompt = render_prompt(history, segment.text) if history else None
            length, ids = self.measure.measure(prompt) if prompt is not None else (math.inf, None)
            if prompt is None or length > self.budget:  # carried whole or not at all, as in the released pipeline
                history = []
                prompt = render_context(segment.text)
                length, ids = self.measure.measure(prompt)
            self._pending = Request(
                chain=self.index,
                step=len(self._entries),
                item=segment.item,
                piece=segment.piece,
                prompt=prompt,
                prompt_token_ids=ids,
                prompt_length=length,
                max_tokens=self.max_new_tokens,
                history=len(history),
                attempt=self._attempt,
            )
        return self._pending

    def accept(self, generation: str) -> list[dict[str, str]]:
        """Record the generation for the pending request; return the pairs parsed from it."""
        request = self._require_pending()
        pairs = parse_pairs(generation)
        self._record(pairs, carried=request.history > 0)
        return pairs

    def failed(self) -> bool:
        """The engine could not serve the pending request. Return True if it will be retried.

        After :data:`RETRIES` retries the text is recorded with no pairs (it passes through templify as
        raw text) and the chain moves on.
        """
        request = self._require_pending()
        if self._attempt < RETRIES:
            self._attempt += 1
            self._pending = None
            return True
        self._record([], carried=request.history > 0)
        return False

    def entries(self) -> list[dict[str, Any]]:
        """The chain's read collection so far (complete once :attr:`done`); entries are copies."""
        return [{**e, "QA_list": [dict(p) for p in e["QA_list"]]} for e in self._entries]

    def _require_pending(self) -> Request:
        if self._pending is None:
            raise RuntimeError(f"chain {self.index}: no request is pending; call next_request() first")
        return self._pending


def chain_layout(n_texts: int, rounds: int) -> list[list[int]]:
    """Text indices per chain: chain i holds i, B+i, 2B+i, ... with B = ⌈N/M⌉ (the paper's rounds)."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    if n_texts == 0:
        return []
    width = -(-n_texts // rounds)
    return [list(range(i, n_texts, width)) for i in range(width)]


def plan_chains(
    texts: Sequence[str],
    rounds: int,
    *,
    max_model_len: int = 4096,
    max_new_tokens: int = 400,
    tokenizer: Any = None,
    count_tokens: Callable[[str], int] | None = None,
) -> list[Chain]:
    """Lay ``texts`` out in chains for ``rounds``-shot synthesis (see the module docstring).

    Lengths are counted with ``count_tokens`` if given, else exactly with ``tokenizer`` (the
    synthesizer's, or the serving model's), else with the paper's 1.5 × words estimate and a warning.
    """
    budget = max_model_len - max_new_tokens
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    measure = make_measure(tokenizer, count_tokens)
    smallest = measure.count(render_context("x"))
    if budget < smallest:
        raise ValueError(
            f"max_model_len - max_new_tokens = {budget} leaves no room for a prompt "
            f"(the shortest prompt takes {smallest})"
        )
    chains = []
    for c, items in enumerate(chain_layout(len(texts), rounds)):
        segments: list[Segment] = []
        for item in items:
            text = texts[item]
            if not isinstance(text, str):
                raise TypeError(f"texts[{item}] is {type(text).__name__}, not a string")
            pieces = split_to_fit(text, measure, budget) if text.strip() else [text]
            segments.extend(Segment(item, p, piece) for p, piece in enumerate(pieces))
        chains.append(Chain(c, segments, measure, budget, max_new_tokens))
    return chains
