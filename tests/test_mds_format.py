"""Our MDS encoder against Streaming's own writer and reader.

The stock ``MDSWriter`` is the reference: the same samples must give byte-identical shard files and
equal ``index.json`` entries, and the stock ``StreamingDataset`` must read ours back. Conversion must
not import torch, transformers or streaming (the start-up they cost is the reason the encoder exists).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipt_engine.data.mds_format import is_compression, parse_compression
from ipt_engine.data.mds_writer import ResumableMDSWriter

COLUMNS = {"tokens": "ndarray:int32", "doc_lens": "ndarray:int32"}


def _samples(draw_lengths: list[list[int]], seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for lens in draw_lengths:
        n = sum(lens)
        out.append({"tokens": rng.integers(0, 2**31 - 1, size=n, dtype=np.int32),
                    "doc_lens": np.asarray(lens, dtype=np.int32)})
    return out


def _write_both(tmp: Path, samples, compression, size_limit) -> tuple[Path, Path, list]:
    from streaming import MDSWriter

    stock, ours = tmp / "stock", tmp / "ours"
    with MDSWriter(out=str(stock), columns=COLUMNS, compression=compression, size_limit=size_limit) as w:
        for s in samples:
            w.write(s)
    checkpoints = []
    with ResumableMDSWriter(out=ours, columns=COLUMNS, compression=compression, size_limit=size_limit,
                            on_shard=lambda shards, resume, stats: checkpoints.append(len(shards))) as w:
        for i, s in enumerate(samples):
            w.write_sample(s, i, {"samples": 1})
    return stock, ours, checkpoints


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lengths=st.lists(st.lists(st.integers(1, 300), min_size=1, max_size=4), min_size=1, max_size=40),
       compression=st.sampled_from([None, "zstd", "zstd:7", "bz2"]),
       seed=st.integers(0, 2**32 - 1))
def test_shards_are_byte_identical_to_the_stock_writer(tmp_path_factory, lengths, compression, seed):
    tmp = tmp_path_factory.mktemp("mds")
    samples = _samples(lengths, seed)
    size_limit = 5000  # above any one sample here, so both writers cut shards at the same samples
    stock, ours, checkpoints = _write_both(tmp, samples, compression, size_limit)
    stock_index = json.loads((stock / "index.json").read_text())
    our_index = json.loads((ours / "index.json").read_text())
    assert our_index == stock_index
    for entry in stock_index["shards"]:
        name = (entry["zip_data"] or entry["raw_data"])["basename"]
        assert (ours / name).read_bytes() == (stock / name).read_bytes(), name
    assert checkpoints == list(range(1, len(stock_index["shards"]) + 1))


def test_stock_dataset_reads_our_shards(tmp_path):
    from streaming import StreamingDataset

    samples = _samples([[5, 7], [1], [300, 2, 9]] * 30, seed=11)
    out = tmp_path / "ours"
    with ResumableMDSWriter(out=out, columns=COLUMNS, compression="zstd", size_limit=1 << 12,
                            on_shard=lambda *a: None) as w:
        for s in samples:
            w.write_sample(s, None, {})
    assert len(json.loads((out / "index.json").read_text())["shards"]) > 1
    ds = StreamingDataset(local=str(out), shuffle=False, batch_size=1)
    assert len(ds) == len(samples)
    for got, want in zip((ds[i] for i in range(len(ds))), samples):
        np.testing.assert_array_equal(got["tokens"], want["tokens"])
        np.testing.assert_array_equal(got["doc_lens"], want["doc_lens"])


def test_no_index_when_the_block_raises(tmp_path):
    out = tmp_path / "x"
    with pytest.raises(RuntimeError), ResumableMDSWriter(out=out, columns=COLUMNS, compression=None, size_limit=None,
                                                         on_shard=lambda *a: None) as w:
        w.write_sample(_samples([[3]], 1)[0], None, {})
        raise RuntimeError("boom")
    assert not (out / "index.json").exists()


def test_compression_names_match_streaming():
    from streaming.base.compression import get_compressions

    for algo in sorted(get_compressions()) + ["zstd:0", "zstd:23", "gz:10", "lz4", "snappy:1", "zstd:x"]:
        assert is_compression(algo) == (algo in get_compressions()), algo
    assert parse_compression("zstd") == ("zstd", 3) and parse_compression(None) is None


def test_bad_column_value_names_the_column(tmp_path):
    w = ResumableMDSWriter(out=tmp_path, columns=COLUMNS, compression=None, size_limit=None, on_shard=lambda *a: None)
    with pytest.raises(ValueError, match="doc_lens.*int32.*int64"):
        w.write({"tokens": np.ones(3, np.int32), "doc_lens": np.ones(1, np.int64)})


def test_convert_imports_neither_torch_nor_transformers_nor_streaming(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": f"document number {i} " * 20}) + "\n" for i in range(50)))
    code = (
        "import sys\n"
        "from ipt_engine.data.convert import ConvertOptions, convert\n"
        f"convert(ConvertOptions(inputs=[{str(src)!r}], output={str(tmp_path / 'out')!r}, max_seq_len=128,"
        " workers=0, progress=False))\n"
        "print(sorted(m for m in ('torch', 'transformers', 'streaming') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
    from ipt_engine.data.shard_reader import iter_samples

    assert sum(len(s["tokens"]) for s in iter_samples(tmp_path / "out")) > 50 * 20
