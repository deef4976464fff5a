"""Reading our MDS shard directories sample by sample, for ``ipt inspect`` and tests.

Training reads shards through the stock ``StreamingDataset``; inspection only needs a sequential scan,
so here each shard file is decompressed in memory and its samples are decoded with Streaming's own MDS
reader (the joint-shard layout is a sample count, a table of byte offsets, then the samples).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ipt_engine.errors import UserError


def load_index(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / "index.json"
    if not path.is_file():
        if (Path(directory) / "manifest.json").is_file():
            raise UserError(f"{directory}: no index.json; the conversion did not finish (rerun it with --resume)")
        raise UserError(f"{directory}: no index.json; not an MDS directory")
    try:
        index: dict[str, Any] = json.loads(path.read_text())
        return index
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: malformed JSON ({e.msg})") from None


def iter_shard_samples(directory: str | Path, info: dict[str, Any]) -> Iterator[dict[str, Any]]:
    from streaming.base.compression import decompress
    from streaming.base.format import reader_from_json

    directory = Path(directory)
    reader = reader_from_json(str(directory), None, info)
    zip_info = info.get("zip_data")
    if zip_info:
        raw = decompress(info["compression"], (directory / zip_info["basename"]).read_bytes())
    else:
        raw = (directory / info["raw_data"]["basename"]).read_bytes()
    n = int(np.frombuffer(raw[:4], np.uint32)[0])
    offsets = np.frombuffer(raw[4 : 4 * (n + 2)], np.uint32)
    for i in range(n):
        yield reader.decode_sample(raw[offsets[i] : offsets[i + 1]])


def iter_samples(directory: str | Path) -> Iterator[dict[str, Any]]:
    """Every sample of an MDS directory, in order."""
    for info in load_index(directory)["shards"]:
        yield from iter_shard_samples(directory, info)


def split_documents(sample: dict[str, Any]) -> list[NDArray[Any]]:
    """Cut a sample's ``tokens`` into its document pieces by ``doc_lens``."""
    tokens, lens = sample["tokens"], sample["doc_lens"]
    if int(np.sum(lens)) != len(tokens):
        raise ValueError(f"doc_lens sum to {int(np.sum(lens))} but the sample holds {len(tokens)} tokens")
    return np.split(tokens, np.cumsum(lens)[:-1])
