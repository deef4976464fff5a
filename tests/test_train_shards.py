"""Shards as training reads them: ``ipt convert`` layout, llm-foundry layouts, and the tokenizer check.

Also home of the helpers the other training tests use to write small real MDS directories (what
``ipt convert`` writes: ``tokens`` + ``doc_lens`` columns, zstd, and an ``ipt.json`` beside the index).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streaming")
pytest.importorskip("transformers")

from ipt_engine.errors import UserError  # noqa: E402

pytestmark = pytest.mark.train


def corpus_texts(kind: str, n: int = 200) -> list[str]:
    """Real text on every machine: paragraphs of standard-library docstrings (``kind`` picks a half)."""
    import collections
    import email
    import http.client
    import json as json_mod
    import logging
    import pathlib
    import re
    import subprocess

    paras: list[str] = []
    for mod in (collections, email, http.client, json_mod, logging, pathlib, re, subprocess):
        for _, obj in inspect.getmembers(mod):
            doc = inspect.getdoc(obj) or ""
            paras.extend(p.strip() for p in doc.split("\n\n") if len(p.strip()) > 40)
    paras = sorted(set(paras))
    half = paras[0::2] if kind == "raw" else [f"Question: what does this say?\nAnswer: {p}" for p in paras[1::2]]
    return half[:n]


def tokenizer():
    from ipt_engine.data.tokenizer_info import load_tokenizer

    return load_tokenizer("mistral-v1")


def pack_concat(docs: list[np.ndarray], n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Concat packing: fill rows of exactly ``n`` tokens, cutting documents at row ends."""
    rows, cur, lens = [], [], []
    for doc in docs:
        while len(doc):
            take = min(len(doc), n - sum(lens))
            cur.append(doc[:take])
            lens.append(take)
            doc = doc[take:]
            if sum(lens) == n:
                rows.append((np.concatenate(cur).astype(np.int32), np.array(lens, dtype=np.int32)))
                cur, lens = [], []
    return rows


def write_ipt_shards(out: Path, texts: list[str], *, max_seq_len: int = 64, tok=None,
                     fingerprint: dict | None = None, doc_lens: bool = True, max_rows: int | None = None) -> Path:
    """A real MDS directory in the ``ipt convert`` layout (or, ``doc_lens=False``, llm-foundry's).

    ``max_rows`` keeps the first rows only: an epoch of a known size.
    """
    from streaming import MDSWriter

    from ipt_engine.data.tokenizer_info import tokenizer_fingerprint

    tok = tok or tokenizer()
    docs = [np.array([tok.bos_token_id, *tok(t, add_special_tokens=False)["input_ids"], tok.eos_token_id])
            for t in texts]
    rows = pack_concat(docs, max_seq_len)[:max_rows]
    columns = {"tokens": "ndarray:int32", "doc_lens": "ndarray:int32"} if doc_lens else {"tokens": "ndarray:int32"}
    with MDSWriter(out=str(out), columns=columns, compression="zstd") as w:
        for tokens, lens in rows:
            w.write({"tokens": tokens, "doc_lens": lens} if doc_lens else {"tokens": tokens})
    if doc_lens:
        meta = {"format": "ipt-mds", "version": 1, "tokenizer": fingerprint or tokenizer_fingerprint(tok, "mistral-v1"),
                "max_seq_len": max_seq_len, "packing": "concat", "add_bos": True, "add_eos": True,
                "columns": columns, "inputs": [], "stats": {"samples": len(rows)}}
        (out / "ipt.json").write_text(json.dumps(meta))
    return out


def write_demo_shards(root: Path, max_seq_len: int = 64) -> tuple[Path, Path]:
    tok = tokenizer()
    raw = write_ipt_shards(root / "raw", corpus_texts("raw"), max_seq_len=max_seq_len, tok=tok)
    aug = write_ipt_shards(root / "augmented", corpus_texts("augmented"), max_seq_len=max_seq_len, tok=tok)
    return raw, aug


# --------------------------------------------------------------------------------------------------


def _read_all(local: Path, eos_id: int, vocab: int):
    from streaming import StreamingDataset

    from ipt_engine.train.data import normalize_sample

    ds = StreamingDataset(local=str(local), shuffle=False, batch_size=1)
    return [normalize_sample(ds[i], eos_id, vocab) for i in range(len(ds))]


def test_ipt_shards_round_trip(tmp_path):
    tok = tokenizer()
    write_ipt_shards(tmp_path / "s", corpus_texts("raw", 20), tok=tok)
    samples = _read_all(tmp_path / "s", tok.eos_token_id, len(tok))
    assert samples and all(int(s["doc_lens"].sum()) == len(s["tokens"]) for s in samples)


def test_llm_foundry_tokens_column_splits_at_eos(tmp_path):
    tok = tokenizer()
    write_ipt_shards(tmp_path / "s", corpus_texts("raw", 20), tok=tok, doc_lens=False)
    samples = _read_all(tmp_path / "s", tok.eos_token_id, len(tok))
    for s in samples:
        ends = np.cumsum(s["doc_lens"])
        assert all(s["tokens"][e - 1] == tok.eos_token_id for e in ends[:-1])
        assert int(s["doc_lens"].sum()) == len(s["tokens"])


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_llm_foundry_legacy_bytes_column(tmp_path, dtype):
    from streaming import MDSWriter

    tok = tokenizer()
    ids = np.array([1, 500, 900, 2, 1, 31999, 2, 1, 7], dtype=dtype)
    with MDSWriter(out=str(tmp_path / "s"), columns={"bytes": "bytes"}, compression="zstd") as w:
        w.write({"bytes": ids.tobytes()})
    (sample,) = _read_all(tmp_path / "s", tok.eos_token_id, len(tok))
    assert sample["tokens"].tolist() == ids.tolist()
    assert sample["doc_lens"].tolist() == [4, 3, 2]


def test_tokenizer_mismatch_is_one_clear_error(tmp_path):
    from ipt_engine.data.tokenizer_info import tokenizer_fingerprint
    from ipt_engine.train.shard_check import inspect_stream

    tok = tokenizer()
    other = {**tokenizer_fingerprint(tok), "name": "gpt2", "vocab_size": 50257, "vocab_hash": "0123456789abcdef"}
    write_ipt_shards(tmp_path / "s", corpus_texts("raw", 5), tok=tok, fingerprint=other)
    with pytest.raises(UserError, match=r"train_loader\.streams\.raw: shards in .* tokenized with 'gpt2'") as e:
        inspect_stream(str(tmp_path / "s"), None, tokenizer_fingerprint(tok), key="train_loader.streams.raw")
    assert "\n" not in str(e.value)


def test_seq_len_resolution(tmp_path):
    from ipt_engine.data.tokenizer_info import tokenizer_fingerprint
    from ipt_engine.train.shard_check import inspect_stream, resolve_seq_len

    tok = tokenizer()
    write_ipt_shards(tmp_path / "s", corpus_texts("raw", 5), tok=tok, max_seq_len=64)
    infos = {"raw": inspect_stream(str(tmp_path / "s"), None, tokenizer_fingerprint(tok), key="k")}
    assert resolve_seq_len(None, infos, "train_loader") == 64
    assert resolve_seq_len(128, infos, "train_loader") == 128
    with pytest.raises(UserError, match="shorter than the samples"):
        resolve_seq_len(32, infos, "train_loader")
