"""From packed samples to a training batch: pad rows to N, restart positions, mask cross-document labels.

A sample is ``tokens`` (≤ N ids) and ``doc_lens`` (lengths of the document pieces, summing to
``len(tokens)``). The batch keeps the per-row ``doc_lens`` (``[B, max_docs]``, zero-padded) instead of
``cu_seqlens`` over the whole batch, so Composer can cut it into microbatches along dim 0 and each
microbatch still describes itself; the model builds ``cu_seqlens`` from it.

Labels follow Hugging Face's convention (``labels[t]`` is the target predicted from position ``t-1``;
the model shifts). Two kinds of target are masked with -100:

- the first token of every piece: predicting it from the previous document's last token (or, at the
  start of a row, from nothing) teaches the model a transition that is not in the data;
- padding: it is not data at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

IGNORE_INDEX = -100


def split_at_eos(tokens: np.ndarray, eos_id: int) -> np.ndarray:
    """Document pieces of a row from a converter that records none: each piece ends at an EOS (inclusive)."""
    ends = np.flatnonzero(tokens == eos_id) + 1
    bounds = np.concatenate([[0], ends[ends < len(tokens)], [len(tokens)]])
    lens = np.diff(bounds)
    return lens[lens > 0].astype(np.int32)


def clip_to(tokens: np.ndarray, doc_lens: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the first ``n`` tokens of a row, shortening or dropping the pieces past it."""
    if len(tokens) <= n:
        return tokens, doc_lens
    ends = np.cumsum(doc_lens)
    keep = int(np.searchsorted(ends, n, side="left")) + 1
    lens = doc_lens[:keep].copy()
    lens[-1] -= int(ends[keep - 1]) - n
    return tokens[:n], lens[lens > 0]


class PackedCollator:
    """Turn a list of ``{"tokens", "doc_lens"}`` samples into ``input_ids``, ``labels``, ``position_ids``
    (``[B, N]``, int64) and ``doc_lens`` (``[B, max_docs]``, int32)."""

    def __init__(self, max_seq_len: int, pad_id: int):
        self.max_seq_len = max_seq_len
        self.pad_id = pad_id

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        import torch

        n, b = self.max_seq_len, len(samples)
        rows = []
        for s in samples:
            tokens = np.asarray(s["tokens"], dtype=np.int64)
            doc_lens = np.asarray(s["doc_lens"], dtype=np.int64)
            if int(doc_lens.sum()) != len(tokens):
                raise ValueError(f"doc_lens sum {int(doc_lens.sum())} != {len(tokens)} tokens in a sample")
            rows.append(clip_to(tokens, doc_lens[doc_lens > 0], n))
        max_docs = max(1, max(len(d) for _, d in rows))
        input_ids = np.full((b, n), self.pad_id, dtype=np.int64)
        doc_lens_out = np.zeros((b, max_docs), dtype=np.int32)
        for i, (tokens, doc_lens) in enumerate(rows):
            input_ids[i, : len(tokens)] = tokens
            doc_lens_out[i, : len(doc_lens)] = doc_lens
        # The whole batch at once, as a table of segments (each row's pieces, then its padding tail):
        # one run-length expansion gives every token's segment start, where a per-row loop of small
        # NumPy calls costs more than the data it touches.
        used = doc_lens_out.sum(axis=1, dtype=np.int64)
        seg = np.concatenate([doc_lens_out.astype(np.int64), (n - used)[:, None]], axis=1).ravel()
        starts = np.zeros(seg.size, dtype=np.int64)
        np.cumsum(seg[:-1], out=starts[1:])
        position_ids = (np.arange(b * n, dtype=np.int64) - np.repeat(starts, seg)).reshape(b, n)
        labels = input_ids.copy()
        labels[np.arange(n)[None, :] >= used[:, None]] = IGNORE_INDEX  # padding
        is_piece = np.ones((b, max_docs + 1), dtype=bool)
        is_piece[:, -1] = False
        first = starts[is_piece.ravel() & (seg > 0)]
        labels.reshape(-1)[first] = IGNORE_INDEX  # each piece's first token
        return {
            "input_ids": torch.from_numpy(input_ids),
            "labels": torch.from_numpy(labels),
            "position_ids": torch.from_numpy(position_ids),
            "doc_lens": torch.from_numpy(doc_lens_out),
        }
