"""`ipt convert`: round trip through the stock StreamingDataset, determinism, resume, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ipt_engine.cli import main
from ipt_engine.data.convert import ConvertOptions, convert
from tests.helpers_data import as_pairs, read_all, write_jsonl

N = 256


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory, corpus_docs) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "docs.jsonl", corpus_docs[:60])


def _convert(inp, out, **kw) -> ConvertOptions:
    opts = ConvertOptions(inputs=[str(p) for p in (inp if isinstance(inp, list) else [inp])], output=str(out),
                          max_seq_len=kw.pop("max_seq_len", N), workers=kw.pop("workers", 0), progress=False, **kw)
    convert(opts)
    return opts


def _reference_docs(tok, texts: list[str]) -> list[list[int]]:
    """Independent reference: the HF tokenizer's own BOS convention plus EOS, one call per document."""
    return [tok(t)["input_ids"] + [tok.eos_token_id] for t in texts]


def _stock_streaming_samples(directory: Path) -> list[dict]:
    from streaming import StreamingDataset

    ds = StreamingDataset(local=str(directory), shuffle=False, batch_size=1)
    return [ds[i] for i in range(len(ds))]


def test_concat_round_trip_through_stock_streaming_dataset(tmp_path, corpus_file, corpus_docs, mistral_tok):
    out = tmp_path / "mds"
    _convert(corpus_file, out, packing="concat", shard_size=1 << 14)
    samples = _stock_streaming_samples(out)
    assert len(json.loads((out / "index.json").read_text())["shards"]) > 1  # several shards, one index
    assert all(s["tokens"].dtype == np.int32 and s["doc_lens"].dtype == np.int32 for s in samples)
    assert all(len(s["tokens"]) == N for s in samples[:-1]) and 0 < len(samples[-1]["tokens"]) <= N
    pieces = [p.tolist() for s in samples for p in np.split(s["tokens"], np.cumsum(s["doc_lens"])[:-1])]
    flat_pieces = [t for p in pieces for t in p]
    ref = _reference_docs(mistral_tok, [d["text"] for d in corpus_docs[:60]])
    assert flat_pieces == [t for d in ref for t in d]
    # Every piece that does not end a sample ends with EOS; cuts happen only at sample ends.
    for s in samples:
        ends = np.cumsum(s["doc_lens"]) - 1
        assert all(s["tokens"][e] == mistral_tok.eos_token_id for e in ends[:-1])
    meta = json.loads((out / "ipt.json").read_text())
    assert meta["max_seq_len"] == N and meta["packing"] == "concat" and meta["add_bos"] is True
    assert meta["tokenizer"]["bos_id"] == 1 and meta["tokenizer"]["eos_id"] == 2
    assert meta["stats"]["documents"] == 60 and meta["stats"]["tokens"] == sum(map(len, ref))


def test_bfd_round_trip_is_the_documents_as_a_multiset(tmp_path, corpus_file, corpus_docs, mistral_tok):
    out = tmp_path / "mds"
    _convert(corpus_file, out, packing="bfd", bfd_window=8)
    samples = _stock_streaming_samples(out)
    got = Counter(tuple(p.tolist()) for s in samples for p in np.split(s["tokens"], np.cumsum(s["doc_lens"])[:-1]))
    want = Counter()
    for d in _reference_docs(mistral_tok, [d["text"] for d in corpus_docs[:60]]):
        for i in range(0, len(d), N):  # documents longer than N are cut into N-token pieces first
            want[tuple(d[i : i + N])] += 1
    assert got == want
    assert all(len(s["tokens"]) <= N for s in samples)


def test_output_is_identical_for_any_number_of_workers(tmp_path, corpus_file):
    runs = {}
    for w in (0, 1, 2):
        out = tmp_path / f"w{w}"
        _convert(corpus_file, out, packing="bfd", workers=w, batch_chars=20_000)
        runs[w] = as_pairs(read_all(out))
    assert runs[0] == runs[1] == runs[2]


def test_fill_rates_on_the_default_corpus(tmp_path, mistral_dir):
    from ipt_engine.corpus import write_default_corpus

    src, _ = write_default_corpus(tmp_path / "default.jsonl")
    for packing in ("bfd", "concat"):
        out = tmp_path / packing
        _convert(src, out, packing=packing, max_seq_len=2048)
        samples = read_all(out)
        fill = sum(len(s["tokens"]) for s in samples) / (2048 * len(samples))
        if packing == "bfd":
            assert fill >= 0.99
        else:
            assert all(len(s["tokens"]) == 2048 for s in samples[:-1])


def test_readers_all_formats_agree(tmp_path, corpus_docs):
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    rows = [{"body": d["text"], "n": i} for i, d in enumerate(corpus_docs[:12])]
    plain = write_jsonl(tmp_path / "a.jsonl", rows)
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(plain.read_bytes()))
    (tmp_path / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet", row_group_size=5)
    txt_dir = tmp_path / "txt"
    txt_dir.mkdir()
    for i, r in enumerate(rows):
        (txt_dir / f"{i:03d}.txt").write_text(r["body"])
    from datasets import Dataset

    Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
    outs = {}
    for name in ("a.jsonl", "b.jsonl.gz", "c.jsonl.zst", "d.parquet", "txt", "hf"):
        out = tmp_path / f"out-{name}"
        _convert(tmp_path / name, out, text_field="body")
        outs[name] = as_pairs(read_all(out))
    first = outs["a.jsonl"]
    assert first and all(v == first for v in outs.values())


def _errline(capsys, argv) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    err = [e for e in err if not e.startswith("convert:")]  # progress bar lines
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return code, err[0]


@pytest.mark.parametrize("raw, needle", [
    (b'{"text": "ok", \n', "3: malformed JSON"),
    (b'{"other": "x"}\n', "3: missing text field 'text'"),
    (b'{"text": 42}\n', "3: text field 'text' is int"),
    (b'{"text": "caf\xe9"}\n', "3: invalid UTF-8"),
    (b'["text"]\n', "3: expected a JSON object"),
])
def test_bad_records_give_one_line_naming_file_and_line(tmp_path, capsys, raw, needle):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "good one"}, {"text": "good two"}], raw_lines={2: raw})
    code, line = _errline(capsys, ["convert", str(src), "-o", str(tmp_path / "o"), "--workers", "0", "--no-progress"])
    assert code == 2 and f"{src}:{needle.split(':')[0]}" in line and needle.split(": ", 1)[1] in line


def test_bad_files_and_options(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    o = str(tmp_path / "o")
    cases = [
        (["convert", str(empty), "-o", o], "empty file"),
        (["convert", str(tmp_path / "missing.jsonl"), "-o", o], "no such file"),
        (["convert", str(empty), "-o", o, "--max-seq-len", "1"], "ipt convert: error: --max-seq-len: must be >= 2, got 1"),
        (["convert", str(empty), "-o", o, "--set", "bfd_window=0"], "error: command line: bfd_window: must be >= 1, got 0"),
        (["convert", str(empty), "-o", o, "--compression", "lz5"], "error: --compression: must be a Streaming codec"),
        (["convert", str(empty), "-o", o, "--tokenizer", str(tmp_path)], "cannot load tokenizer"),
    ]
    for argv, needle in cases:
        code, line = _errline(capsys, [*argv, "--workers", "0", "--no-progress"])
        assert code == 2 and needle in line, line


def test_skip_mode_counts_and_writes_rejects(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": f"document number {i}"} for i in range(5)],
                      raw_lines={1: b"{bad\n", 4: b'{"text": null}\n'})
    out = tmp_path / "o"
    assert main(["convert", str(src), "-o", str(out), "--on-error", "skip", "--workers", "0", "--no-progress"]) == 0
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(r["index"], r["error"].split(":")[0]) for r in rejects] == [(2, "malformed JSON"), (5, "text field 'text' is NoneType, not a string")]
    assert "rejects    2" in capsys.readouterr().out
    assert json.loads((out / "ipt.json").read_text())["stats"]["documents"] == 5


@pytest.mark.parametrize("packing", ["concat", "bfd"])
@pytest.mark.parametrize("crash_at", [1, 3, 6])
def test_crash_then_resume_equals_uninterrupted(tmp_path, corpus_file, monkeypatch, packing, crash_at):
    from ipt_engine.data import mds_writer

    kw = dict(packing=packing, shard_size=1 << 13, bfd_window=3, batch_chars=30_000)
    ref = tmp_path / "ref"
    _convert(corpus_file, ref, **kw)
    want = as_pairs(read_all(ref))

    original = mds_writer.ResumableMDSWriter.flush_shard
    calls = {"n": 0}

    def crashing(self):
        original(self)
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise KeyboardInterrupt  # stands for a kill between two shards

    monkeypatch.setattr(mds_writer.ResumableMDSWriter, "flush_shard", crashing)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        _convert(corpus_file, out, **kw)
    assert not (out / "index.json").exists()  # no index over partial data
    monkeypatch.setattr(mds_writer.ResumableMDSWriter, "flush_shard", original)
    _convert(corpus_file, out, resume=True, **kw)
    assert as_pairs(read_all(out)) == want
    assert json.loads((out / "ipt.json").read_text())["stats"] == json.loads((ref / "ipt.json").read_text())["stats"]


def test_kill_9_then_resume_equals_uninterrupted(tmp_path, corpus_file, mistral_dir):
    args = ["--max-seq-len", "128", "--packing", "bfd", "--bfd-window", "4", "--shard-size", "2048",
            "--workers", "1", "--no-progress", "--tokenizer", str(mistral_dir)]
    cmd = [sys.executable, "-m", "ipt_engine", "convert", str(corpus_file)]
    ref = tmp_path / "ref"
    subprocess.run([*cmd, "-o", str(ref), *args], check=True, capture_output=True)
    out = tmp_path / "out"
    proc = subprocess.Popen([*cmd, "-o", str(out), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once a few shards are committed, mid-run
        m = out / "manifest.json"
        try:
            if m.exists() and len((json.loads(m.read_text()).get("checkpoint") or {}).get("shards", [])) >= 5:
                break
        except json.JSONDecodeError:
            pass
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    subprocess.run([*cmd, "-o", str(out), "--resume", *args], check=True, capture_output=True)
    assert as_pairs(read_all(out)) == as_pairs(read_all(ref))


def test_resume_without_earlier_output_starts_fresh(tmp_path, corpus_file):
    out = tmp_path / "new"
    _convert(corpus_file, out, resume=True)
    assert json.loads((out / "manifest.json").read_text())["complete"] is True


def test_existing_output_is_refused_without_resume(tmp_path, corpus_file, capsys):
    out = tmp_path / "o"
    _convert(corpus_file, out)
    code, line = _errline(capsys, ["convert", str(corpus_file), "-o", str(out), "--workers", "0", "--no-progress"])
    assert code == 2 and "--resume" in line
