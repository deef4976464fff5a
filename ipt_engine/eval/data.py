"""The local JSONL the shipped evaluation tasks read, built from held-out data.

- ``heldout_qa.jsonl`` (``ipt_heldout_qa``, multiple choice): one item per synthesized question about a
  held-out text. A synthesized multiple-choice pair keeps its own options; any other pair's answer is
  placed among the answers of other held-out questions (distractors), at a position drawn from the
  question's hash, so the file is the same on every run.
- ``heldout_gen.jsonl`` (``ipt_heldout_gen``, generation): the free-form and chain-of-thought pairs, with
  their final answers as targets.
- ``heldout_text.jsonl`` (``ipt_heldout_ppl``, rolling log-likelihood): the held-out raw texts.

Held-out means the texts were carved out by :mod:`ipt_engine.data.split` before training, so these
measure whether a model answers questions about texts it has not seen. :func:`split_collections` makes
the same decision for read collections (by each entry's ``context``) that ``ipt convert --split`` makes
for raw documents, so the two sides agree.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ipt_engine.errors import UserError
from ipt_engine.io.atomic import atomic_open, atomic_write_json

QA_FILE, GEN_FILE, TEXT_FILE = "heldout_qa.jsonl", "heldout_gen.jsonl", "heldout_text.jsonl"
DATA_FILES = {"ipt_heldout_qa": QA_FILE, "ipt_heldout_gen": GEN_FILE, "ipt_heldout_ppl": TEXT_FILE}


def iter_collections(inputs: Iterable[str | Path]) -> Iterator[list[dict[str, Any]]]:
    """Read collections (one JSON list per line) from files or directories, in order."""
    from ipt_engine.io.discover import expand_inputs
    from ipt_engine.io.readers import read_records
    from ipt_engine.templify.validate import collection_error

    for source in expand_inputs([str(p) for p in inputs]):
        for rec in read_records(source, mode="json"):
            problem = rec.error or collection_error(rec.value)
            if problem is not None:
                raise UserError(f"{rec.location}: {problem}")
            yield rec.value


def iter_texts(inputs: Iterable[str | Path], text_field: str = "text") -> Iterator[str]:
    from ipt_engine.io.discover import expand_inputs
    from ipt_engine.io.readers import read_records

    for source in expand_inputs([str(p) for p in inputs]):
        for rec in read_records(source, text_field=text_field):
            if rec.error is not None:
                raise UserError(f"{rec.location}: {rec.error}")
            yield rec.text or ""  # None only with an error


def _write_jsonl(path: Path, rows: Iterable[Any]) -> int:
    n = 0
    with atomic_open(path, "wb") as f:
        for row in rows:
            f.write((json.dumps(row, ensure_ascii=False) + "\n").encode())
            n += 1
    return n


def _relinked(entries: list[dict[str, Any]], kept: list[bool]) -> list[dict[str, Any]]:
    """The kept entries of a collection; an entry whose predecessor was dropped starts a new run."""
    out = []
    prev_kept = False
    for entry, keep in zip(entries, kept):
        if keep:
            e = dict(entry)
            if not prev_kept:
                e["inherit_from_prev"] = False
            out.append(e)
        prev_kept = keep
    return out


def split_collections(inputs: Iterable[str | Path], fraction: float, train_out: Path,
                      heldout_out: Path) -> tuple[int, int]:
    """Split read collections entry by entry with the hash rule of ``ipt convert --split``.

    An entry is held out when its ``context`` is (the same text ``ipt convert`` would hold out of the raw
    shards). Each side keeps its entries in order; an entry whose predecessor went to the other side
    starts a new few-shot run. Returns the number of entries written to each side.
    """
    from ipt_engine.data.split import is_heldout

    train_rows, held_rows = [], []
    for coll in iter_collections(inputs):
        flags = [is_heldout(e["context"], fraction) for e in coll]
        if not all(flags):
            train_rows.append(_relinked(coll, [not f for f in flags]))
        if any(flags):
            held_rows.append(_relinked(coll, flags))
    _write_jsonl(train_out, train_rows)
    _write_jsonl(heldout_out, held_rows)
    return sum(len(c) for c in train_rows), sum(len(c) for c in held_rows)


def _seed(*parts: str) -> int:
    return int.from_bytes(hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest(), "big")


def _clip(text: str, limit: int | None) -> str:
    if limit is None or len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[: cut if cut > limit // 2 else limit].rstrip() + " …"


def qa_items(collections: Iterable[list[dict[str, Any]]], *, n_choices: int = 4,
             max_context_chars: int | None = 2000) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Multiple-choice and generation items from read collections (see the module docstring)."""
    from ipt_engine.templify.pairs import answer_index, parse_pair

    pairs = []
    for coll in collections:
        for entry in coll:
            context = _clip(entry["context"].strip(), max_context_chars)
            for qa in entry["QA_list"]:
                pair = parse_pair(qa)
                if pair.question.strip() and pair.answer.strip():
                    pairs.append((context, pair))
    answers = sorted({p.answer.strip() for _, p in pairs if p.options is None})
    mc, gen = [], []
    for context, pair in pairs:
        question, answer = pair.question.strip(), pair.answer.strip()
        if pair.options is not None:
            idx = answer_index(pair)
            if idx is not None and len(pair.options) > 1:
                mc.append({"context": context, "question": question, "choices": pair.options, "label": idx})
            continue
        gen.append({"context": context, "question": question, "answer": answer})
        pool = [a for a in answers if a.casefold() != answer.casefold()]
        if not pool:
            continue
        rng = random.Random(_seed(context, question, answer))
        choices = rng.sample(pool, min(n_choices - 1, len(pool)))
        label = rng.randrange(len(choices) + 1)
        choices.insert(label, answer)
        mc.append({"context": context, "question": question, "choices": choices, "label": label})
    return mc, gen


def build_eval_data(out_dir: str | Path, *, collections: Iterable[str | Path] = (), texts: Iterable[str | Path] = (),
                    n_choices: int = 4, max_context_chars: int | None = 2000, max_text_chars: int | None = 4000,
                    max_texts: int | None = None) -> dict[str, int]:
    """Write the three task files into ``out_dir`` (and ``info.json``); return the item counts.

    ``collections``: held-out read collections (``ipt synthesize`` output, or the held-out side of
    :func:`split_collections`); ``texts``: held-out raw documents (JSONL with a ``text`` field).
    Contexts and texts are clipped to the given sizes so that a small model on a CPU evaluates in
    seconds; pass None to keep them whole.
    """
    collections, texts = [str(p) for p in collections], [str(p) for p in texts]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mc, gen = qa_items(iter_collections(collections), n_choices=n_choices, max_context_chars=max_context_chars)
    counts = {QA_FILE: _write_jsonl(out / QA_FILE, mc), GEN_FILE: _write_jsonl(out / GEN_FILE, gen)}
    raw: list[dict[str, str]] = []
    for text in iter_texts(texts):
        if max_texts is not None and len(raw) >= max_texts:
            break
        raw.append({"text": _clip(text.strip(), max_text_chars)})
    counts[TEXT_FILE] = _write_jsonl(out / TEXT_FILE, raw)
    atomic_write_json(out / "info.json", {
        "format": "ipt-eval-data", "version": 1, "counts": counts,
        "collections": collections, "texts": texts,
        "n_choices": n_choices, "max_context_chars": max_context_chars, "max_text_chars": max_text_chars,
    })
    return counts
