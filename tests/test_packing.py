"""Packing policies against independent per-document references (hypothesis)."""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ipt_engine.data.packing import BFDPacker, ConcatPacker, Doc, ResumePoint, pack_bfd

lengths_st = st.lists(st.integers(1, 40), min_size=1, max_size=60)


def _docs(lengths: list[int], seed: int = 0) -> list[Doc]:
    rng = np.random.default_rng(seed)
    return [Doc(rng.integers(3, 30000, n).astype(np.int32), ResumePoint(0, i)) for i, n in enumerate(lengths)]


def _run(packer, docs):
    out = []
    for d in docs:
        out.extend(packer.add(d))
    out.extend(packer.finish())
    return out


@given(lengths_st, st.integers(2, 50))
@settings(max_examples=150, deadline=None)
def test_concat_is_the_cut_concatenation(lengths, n):
    docs = _docs(lengths)
    samples = _run(ConcatPacker(n), docs)
    flat = np.concatenate([d.tokens for d in docs])
    # Reference: the plain concatenation cut every n tokens, last piece kept.
    expected = [flat[i : i + n] for i in range(0, len(flat), n)]
    assert [s.tokens.tolist() for s in samples] == [e.tolist() for e in expected]
    for s in samples:
        assert sum(s.doc_lens) == len(s.tokens)
    # Pieces in order reassemble every document.
    pieces = [p for s in samples for p in np.split(s.tokens, np.cumsum(s.doc_lens)[:-1])]
    it = iter(pieces)
    for d in docs:
        got, need = [], len(d.tokens)
        while sum(map(len, got)) < need:
            got.append(next(it))
        assert np.concatenate(got).tolist() == d.tokens.tolist()
    assert sum(s.doc_starts for s in samples) == len(docs)


@given(lengths_st, st.integers(2, 50), st.integers(1, 6))
@settings(max_examples=150, deadline=None)
def test_bfd_never_splits_short_documents_and_keeps_the_multiset(lengths, n, window):
    docs = _docs(lengths)
    samples = _run(BFDPacker(n, window_tokens=n * window), docs)
    assert all(len(s.tokens) <= n for s in samples)
    got = Counter(tuple(p.tolist()) for s in samples for p in np.split(s.tokens, np.cumsum(s.doc_lens)[:-1]))
    want = Counter()
    for d in docs:
        for i in range(0, len(d.tokens), n):
            want[tuple(d.tokens[i : i + n].tolist())] += 1
    assert got == want
    assert sum(s.doc_starts for s in samples) == len(docs)


def _best_fit_reference(lengths: list[int], cap: int) -> list[list[int]]:
    """Textbook best-fit decreasing, O(n * bins), written independently of the fast version."""
    bins: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        best, best_room = None, None
        for b, content in enumerate(bins):
            room = cap - sum(lengths[j] for j in content)
            if room >= lengths[i] and (best_room is None or room < best_room):
                best, best_room = b, room
        if best is None:
            bins.append([i])
        else:
            bins[best].append(i)
    return bins


@given(st.lists(st.integers(1, 30), min_size=1, max_size=80), st.integers(30, 64))
@settings(max_examples=200, deadline=None)
def test_pack_bfd_matches_textbook_best_fit(lengths, cap):
    fast = [idx for idx, _ in pack_bfd(lengths, cap)]
    ref = _best_fit_reference(lengths, cap)
    # Ties between bins with equal room may break differently; the bin *loads* must agree exactly.
    assert sorted(sum(lengths[i] for i in b) for b in fast) == sorted(sum(lengths[i] for i in b) for b in ref)
    assert sorted(i for b in fast for i in b) == list(range(len(lengths)))


def test_bfd_fill_beats_concat_free_cuts_on_mixed_lengths():
    rng = np.random.default_rng(7)
    lengths = rng.integers(20, 900, 3000).tolist()
    bins = pack_bfd(lengths, 1024)
    fill = sum(lengths) / (len(bins) * 1024)
    assert fill > 0.99
