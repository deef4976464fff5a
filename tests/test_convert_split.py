"""`ipt convert --split holdout=F`: two outputs, disjoint by document, deterministic, each a normal output."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("streaming")

from ipt_engine.cli import main  # noqa: E402
from ipt_engine.data.split import is_heldout  # noqa: E402
from tests.helpers_data import read_all, write_jsonl  # noqa: E402

N = 8192  # bfd with N above every document: each document is one whole piece


def _documents(directory: Path) -> Counter:
    """Every document piece of an output, as a tuple of token ids."""
    docs: Counter = Counter()
    for s in read_all(directory):
        start = 0
        for n in s["doc_lens"].tolist():
            docs[tuple(s["tokens"][start:start + n].tolist())] += 1
            start += n
    return docs


def test_split_outputs_are_disjoint_and_follow_the_hash(tmp_path, corpus_docs, mistral_tok):
    texts = [d["text"] for d in corpus_docs[:60]]
    texts = [t[:3000] for t in texts] + [texts[0][:3000], texts[7][:3000]]  # two duplicates
    src = write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in texts])
    out = tmp_path / "shards"
    argv = ["convert", str(src), "-o", str(out), "--max-seq-len", str(N), "--packing", "bfd", "--workers", "0",
            "--no-progress", "--split", "holdout=0.2"]
    assert main(argv) == 0
    held_dir = tmp_path / "shards-holdout"

    def enc(t: str) -> tuple[int, ...]:
        return tuple(mistral_tok(t)["input_ids"] + [mistral_tok.eos_token_id])

    want_held = Counter(enc(t) for t in texts if is_heldout(t, 0.2))
    want_kept = Counter(enc(t) for t in texts if not is_heldout(t, 0.2))
    assert 3 <= sum(want_held.values()) < len(texts) // 2
    assert _documents(held_dir) == want_held
    assert _documents(out) == want_kept  # no held-out document (or copy of one) is in the training shards
    for d, held in ((out, False), (held_dir, True)):
        meta = json.loads((d / "ipt.json").read_text())
        assert meta["split"] == {"fraction": 0.2, "held_out": held}

    # the same split from another process layout, and a rerun that finds both sides complete
    other = tmp_path / "again"
    assert main(["convert", str(src), "-o", str(other), "--max-seq-len", str(N), "--packing", "bfd", "--workers", "2",
                 "--no-progress", "--split", "holdout=0.2", "--split-output", str(tmp_path / "again-held")]) == 0
    assert _documents(other) == want_kept and _documents(tmp_path / "again-held") == want_held
    assert main([*argv, "--resume"]) == 0
    # a different fraction is a different output: --resume refuses it instead of mixing two splits
    assert main([*argv[:-1], "holdout=0.3", "--resume"]) == 2
