"""Packing tokenized documents into training samples of at most N tokens.

Two policies:

- ``concat`` (llm-foundry's behaviour): documents are joined in input order and cut every N tokens, so a
  document may straddle two samples. Every sample holds exactly N tokens except the last one, which is
  kept (llm-foundry drops it; we never lose data).
- ``bfd`` (best-fit decreasing): documents are collected into a window of bounded size, sorted by length,
  and each is put into the fullest open bin it still fits in. A document of ≤ N tokens is never split;
  a longer one is cut into N-token pieces first. Memory stays bounded by the window.

Every sample carries a :class:`ResumePoint`: the input position from which a fresh packer regenerates
exactly that sample and all later ones. ``ipt convert`` stores the resume point of the first sample not
yet on disk with every shard it commits, which is what makes ``--resume`` exact after ``kill -9``:
for ``concat`` it is the document and token offset where the sample starts; for ``bfd`` it is the start
of the sample's window plus how many of that window's bins to skip. Both policies are deterministic
functions of the document stream, so the output is the same for any number of tokenizer workers.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class ResumePoint:
    """Where to restart reading to regenerate a sample: see the module docstring."""

    source: int  # index into the expanded input list
    start: int  # records of that source to skip (reader ``start``)
    offset: int = 0  # tokens of the first document to drop (concat)
    skip: int = 0  # samples to drop after restarting (bfd: bins of the window already written)
    rejects_bytes: int = 0  # length of rejects.jsonl before the first record re-read

    def to_json(self) -> dict[str, int]:
        return {"source": self.source, "start": self.start, "offset": self.offset, "skip": self.skip,
                "rejects_bytes": self.rejects_bytes}

    @classmethod
    def from_json(cls, d: dict[str, int]) -> ResumePoint:
        return cls(**{k: int(v) for k, v in d.items()})


@dataclass(frozen=True)
class Doc:
    """A tokenized document (BOS/EOS already added) and the resume point of its first token."""

    tokens: NDArray[np.int32]
    at: ResumePoint


@dataclass
class Sample:
    tokens: NDArray[np.int32]  # length <= N
    doc_lens: list[int]  # lengths of the pieces, summing to len(tokens)
    doc_starts: int  # pieces that begin a document (counts documents exactly once each)
    resume: ResumePoint = field(compare=False)


class ConcatPacker:
    """Join documents in order and cut every ``max_len`` tokens."""

    def __init__(self, max_len: int, *, first_offset: int = 0) -> None:
        self.max_len = max_len
        self._pieces: list[NDArray[np.int32]] = []
        self._lens: list[int] = []
        self._starts = 0
        self._fill = 0
        self._resume: ResumePoint | None = None
        self._first_offset = first_offset

    def add(self, doc: Doc) -> Iterator[Sample]:
        tokens, offset = doc.tokens, 0
        if self._first_offset:
            offset, self._first_offset = self._first_offset, 0
        n = len(tokens)
        while offset < n:
            if self._fill == 0:
                self._resume = ResumePoint(doc.at.source, doc.at.start, offset, 0, doc.at.rejects_bytes)
            take = min(self.max_len - self._fill, n - offset)
            self._pieces.append(tokens[offset : offset + take])
            self._lens.append(take)
            self._starts += offset == 0
            self._fill += take
            offset += take
            if self._fill == self.max_len:
                yield self._emit()

    def _emit(self) -> Sample:
        assert self._resume is not None
        s = Sample(np.concatenate(self._pieces).astype(np.int32, copy=False), self._lens, self._starts, self._resume)
        self._pieces, self._lens, self._starts, self._fill, self._resume = [], [], 0, 0, None
        return s

    def finish(self) -> Iterator[Sample]:
        if self._fill:
            yield self._emit()


class BFDPacker:
    """Best-fit-decreasing bin packing over bounded windows of documents.

    A window closes once it holds ``window_tokens`` tokens; its bins are emitted in creation order, the
    pieces inside a bin in the order they were placed (longest first). Windows do not share bins, so a
    window is a pure function of the documents in it — the property resumption relies on.
    """

    def __init__(self, max_len: int, *, window_tokens: int) -> None:
        if window_tokens < max_len:
            raise ValueError("window_tokens must be at least max_len")
        self.max_len = max_len
        self.window_tokens = window_tokens
        self._items: list[tuple[NDArray[np.int32], bool]] = []  # (piece, starts a document)
        self._tokens = 0
        self._window_at: ResumePoint | None = None

    def add(self, doc: Doc) -> Iterator[Sample]:
        if self._window_at is None:
            self._window_at = doc.at
        n, N = len(doc.tokens), self.max_len
        for start in range(0, n, N):
            self._items.append((doc.tokens[start : start + N], start == 0))
        self._tokens += n
        if self._tokens >= self.window_tokens:
            yield from self._flush()

    def finish(self) -> Iterator[Sample]:
        if self._items:
            yield from self._flush()

    def _flush(self) -> Iterator[Sample]:
        items, at = self._items, self._window_at
        assert at is not None
        self._items, self._tokens, self._window_at = [], 0, None
        for k, (pieces, _used) in enumerate(pack_bfd([len(p) for p, _ in items], self.max_len)):
            chosen = [items[i] for i in pieces]
            yield Sample(
                np.concatenate([p for p, _ in chosen]).astype(np.int32, copy=False),
                [len(p) for p, _ in chosen],
                sum(s for _, s in chosen),
                ResumePoint(at.source, at.start, 0, k, at.rejects_bytes),
            )


def pack_bfd(lengths: list[int], capacity: int) -> list[tuple[list[int], int]]:
    """Best-fit decreasing: return bins as (item indices in placement order, used capacity).

    Items are placed longest first (ties by input order, for determinism) into the open bin with the
    least remaining room that still fits; a sorted list of (remaining, bin) pairs makes each placement
    a binary search instead of a scan over all bins.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    used: list[int] = []
    room: list[tuple[int, int]] = []  # sorted (remaining capacity, bin index)
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"item of {n} tokens exceeds bin capacity {capacity}")
        j = bisect.bisect_left(room, (n, -1))
        if j == len(room):
            b = len(bins)
            bins.append([i])
            used.append(n)
        else:
            _, b = room.pop(j)
            bins[b].append(i)
            used[b] += n
        left = capacity - used[b]
        if left > 0:
            bisect.insort(room, (left, b))
    return [(bins[b], used[b]) for b in range(len(bins))]
