"""What ``ipt inspect`` computes and draws."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ipt_engine.errors import UserError

# Power-of-two bucket edges: document lengths span 1 to N tokens, so a log scale is what reads well.
_EDGES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072]


@dataclass
class ShardReport:
    directory: Path
    meta: dict[str, Any]
    shards: int = 0
    samples: int = 0
    tokens: int = 0
    pieces: int = 0
    documents: int | None = None
    max_seq_len: int = 0
    lengths: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    decoded: list[list[str]] = field(default_factory=list)

    @property
    def fill_rate(self) -> float:
        return self.tokens / max(1, self.samples * self.max_seq_len)


def inspect_shards(directory: str | Path, *, decode: int = 0, tokenizer: str | None = None) -> ShardReport:
    from ipt_engine.data.convert import read_ipt_json
    from ipt_engine.data.shard_reader import iter_shard_samples, load_index

    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: no such directory")
    index = load_index(directory)
    meta = read_ipt_json(directory)
    rep = ShardReport(directory, meta, shards=len(index["shards"]), max_seq_len=int(meta["max_seq_len"]))
    bos = meta["tokenizer"].get("bos_id") if meta.get("add_bos") else None
    starts = 0
    lengths: list[NDArray[np.int64]] = []
    tok = None
    if decode:
        from ipt_engine.data.tokenizer_info import load_tokenizer

        tok = load_tokenizer(tokenizer or meta["tokenizer"]["name"])
    for info in index["shards"]:
        for sample in iter_shard_samples(directory, info):
            tokens, lens = sample["tokens"], sample["doc_lens"]
            rep.samples += 1
            rep.tokens += len(tokens)
            rep.pieces += len(lens)
            lengths.append(np.asarray(lens, np.int64))
            if bos is not None:
                begins = np.concatenate([[0], np.cumsum(lens)[:-1]])
                starts += int(np.sum(tokens[begins] == bos))
            if tok is not None and len(rep.decoded) < decode:
                pieces = np.split(tokens, np.cumsum(lens)[:-1])
                rep.decoded.append([tok.decode(p.tolist()) for p in pieces])
    rep.lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    rep.documents = starts if bos is not None else meta.get("stats", {}).get("documents")
    return rep


def histogram(lengths: NDArray[np.int64]) -> list[tuple[str, int]]:
    edges = [e for e in _EDGES if e <= max(2, int(lengths.max(initial=1))) * 2]
    counts, _ = np.histogram(lengths, bins=edges)
    rows = [(f"{lo}-{hi - 1}" if hi - lo > 1 else str(lo), int(c)) for lo, hi, c in zip(edges[:-1], edges[1:], counts)]
    while len(rows) > 1 and rows[0][1] == 0:  # leading empty buckets say nothing
        rows.pop(0)
    return rows


def print_report(rep: ShardReport) -> None:
    from ipt_engine.summary import human, print_summary

    m = rep.meta
    print_summary(f"ipt inspect {rep.directory}", [
        ("tokenizer", f"{m['tokenizer']['name']} (vocab {m['tokenizer']['vocab_size']}, hash {m['tokenizer']['vocab_hash']})"),
        ("max seq len", rep.max_seq_len),
        ("packing", m.get("packing")),
        ("shards", rep.shards),
        ("samples", human(rep.samples)),
        ("tokens", human(rep.tokens)),
        ("documents", human(rep.documents) if rep.documents is not None else "-"),
        ("doc pieces", human(rep.pieces)),
        ("fill rate", f"{100 * rep.fill_rate:.2f}%"),
        ("piece length", f"median {int(np.median(rep.lengths)) if rep.pieces else 0}, max {int(rep.lengths.max(initial=0))}"),
    ])
    if rep.pieces:
        rows = histogram(rep.lengths)
        peak = max(c for _, c in rows) or 1
        print("document-piece lengths (tokens)")
        width = max(len(label) for label, _ in rows)
        for label, c in rows:
            print(f"  {label.rjust(width)}  {str(c).rjust(7)}  {'#' * round(40 * c / peak)}")
    for i, pieces in enumerate(rep.decoded):
        print(f"--- sample {i}: {len(pieces)} document piece(s)")
        for j, text in enumerate(pieces):
            print(f"[piece {j}] {text}")


def plot_histogram(rep: ShardReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = histogram(rep.lengths)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    ax.bar(range(len(rows)), [c for _, c in rows], color="#3b7dd8")
    ax.set_xticks(range(len(rows)), [label for label, _ in rows], rotation=45, ha="right")
    ax.set_xlabel("document-piece length (tokens)")
    ax.set_ylabel("pieces")
    ax.set_title(f"{rep.directory.name}: {rep.samples} samples of ≤{rep.max_seq_len} tokens, "
                 f"fill {100 * rep.fill_rate:.1f}% ({rep.meta.get('packing')})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
