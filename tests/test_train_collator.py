"""Collator properties (hypothesis): shapes, restarting positions, labels never cross a document boundary
nor predict padding, and agreement with the kernels' own packed metadata."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from ipt_engine.train.collator import IGNORE_INDEX, PackedCollator, clip_to, split_at_eos  # noqa: E402

pytestmark = pytest.mark.train
N = 32
PAD = 0


@st.composite
def rows(draw, n: int = N, allow_long: bool = False):
    lens = draw(st.lists(st.integers(1, 12), min_size=1, max_size=8))
    if not allow_long:
        while sum(lens) > n:
            lens.pop()
        if not lens:
            lens = [draw(st.integers(1, n))]
    tokens = draw(st.lists(st.integers(3, 999), min_size=sum(lens), max_size=sum(lens)))
    return {"tokens": np.array(tokens), "doc_lens": np.array(lens)}


@settings(max_examples=150, deadline=None)
@given(st.lists(rows(allow_long=True), min_size=1, max_size=5))
def test_batch_layout(samples):
    batch = PackedCollator(N, PAD)(samples)
    b = len(samples)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["position_ids"].shape == (b, N)
    assert batch["doc_lens"].dtype == torch.int32 and batch["doc_lens"].shape[0] == b
    for i, s in enumerate(samples):
        tokens, lens = clip_to(s["tokens"], s["doc_lens"], N)
        used = len(tokens)
        ids, labels, pos = (batch[k][i].numpy() for k in ("input_ids", "labels", "position_ids"))
        got_lens = batch["doc_lens"][i].numpy()
        assert got_lens[: len(lens)].tolist() == lens.tolist() and not got_lens[len(lens):].any()
        assert ids[:used].tolist() == tokens.tolist() and (ids[used:] == PAD).all()
        assert (labels[used:] == IGNORE_INDEX).all()  # a pad is never a target
        start = 0
        for length in lens:
            assert labels[start] == IGNORE_INDEX  # never predicted from the previous document
            assert labels[start + 1 : start + length].tolist() == tokens[start + 1 : start + length].tolist()
            assert pos[start : start + length].tolist() == list(range(length))
            start += length


@settings(max_examples=100, deadline=None)
@given(st.lists(rows(), min_size=1, max_size=4))
def test_agrees_with_kernel_metadata(samples):
    """The kernels' label_mask[t] (predict t+1 from t) is the collator's labels[t+1] != -100."""
    pytest.importorskip("triton")
    from ipt_engine.kernels.metadata import build_packed_metadata

    batch = PackedCollator(N, PAD)(samples)
    meta = build_packed_metadata(batch["doc_lens"], N)
    trainable = batch["labels"][:, 1:] != IGNORE_INDEX
    assert torch.equal(meta.label_mask[:, :-1], trainable)
    assert not meta.label_mask[:, -1].any()
    used = batch["doc_lens"].sum(1)
    for i in range(len(samples)):
        assert torch.equal(meta.position_ids[i, : used[i]], batch["position_ids"][i, : used[i]])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 5), max_size=40))
def test_split_at_eos(tokens):
    eos = 2
    arr = np.array(tokens, dtype=np.int64)
    lens = split_at_eos(arr, eos)
    assert int(lens.sum()) == len(arr) and (lens > 0).all()
    pieces = np.split(arr, np.cumsum(lens)[:-1]) if len(arr) else []
    for j, piece in enumerate(pieces):
        assert (piece[:-1] != eos).all()  # no EOS inside a document
        if j < len(pieces) - 1:
            assert piece[-1] == eos  # every document but a trailing fragment ends at EOS


def test_rejects_inconsistent_doc_lens():
    with pytest.raises(ValueError, match="doc_lens sum"):
        PackedCollator(N, PAD)([{"tokens": np.arange(5), "doc_lens": np.array([2, 2])}])
