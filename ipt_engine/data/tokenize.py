"""Batched tokenization, in-process or in worker processes.

Workers receive the tokenizer as its ``tokenizer.json`` string and rebuild it with the Rust
``tokenizers`` library alone, so a worker starts without importing transformers or torch. Each batch
comes back as one flat int32 array plus per-document lengths (BOS/EOS already added): a handful of
pickled buffers per batch instead of millions of Python ints, which is what lets more workers scale.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from numpy.typing import NDArray

_STATE: dict[str, Any] = {}


def backend_json(tokenizer: Any) -> str:
    """The fast tokenizer's Rust backend, serialized for workers."""
    return str(tokenizer.backend_tokenizer.to_str())


def init_worker(tokenizer_json: str, bos_id: int | None, eos_id: int) -> None:
    # One Rust thread per worker: the parallelism is the worker processes, not oversubscribed threads.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from tokenizers import Tokenizer

    _STATE["tok"] = Tokenizer.from_str(tokenizer_json)
    _STATE["bos"] = bos_id
    _STATE["eos"] = eos_id
    encode = getattr(_STATE["tok"], "encode_batch_fast", None)  # no offsets: faster where available
    _STATE["encode"] = encode or _STATE["tok"].encode_batch


def encode_batch(texts: list[str]) -> tuple[NDArray[np.int32], NDArray[np.int64]]:
    """Tokenize ``texts`` (no special tokens from the template), add BOS/EOS; return (flat, lengths)."""
    bos, eos = _STATE["bos"], _STATE["eos"]
    encodings = _STATE["encode"](texts, add_special_tokens=False)
    out: list[int] = []
    lens = np.empty(len(texts), dtype=np.int64)
    for i, enc in enumerate(encodings):
        ids = enc.ids
        if bos is not None:
            out.append(bos)
        out.extend(ids)
        out.append(eos)
        lens[i] = len(ids) + 1 + (bos is not None)
    return np.array(out, dtype=np.int32), lens
