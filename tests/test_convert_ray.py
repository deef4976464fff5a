"""`ipt convert --ray`: range planning, and conversion on a real local Ray cluster of two nodes
(1 CPU each, so the two ranges run on different nodes), a worker killed mid-range and a driver killed
mid-run.

References are independent of the Ray path: the local `ipt convert` output read back with the stock
StreamingDataset, and the input records read whole by the reader.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ipt_engine.data.convert import ConvertOptions, convert
from ipt_engine.data.ranges import plan_ranges
from ipt_engine.errors import UserError
from ipt_engine.io.readers import read_records
from tests.helpers_data import as_pairs, write_jsonl

N = 2048


# -- planning (no cluster) ---------------------------------------------------------------------------
def _records(seg) -> list[tuple[int, str]]:
    return [(r.index, r.text) for r in read_records(seg.path, start=seg.start, stop=seg.stop, seek=seg.seek)]


def test_ranges_cover_every_record_once_in_order(tmp_path, corpus_docs):
    import pyarrow as pa
    import pyarrow.parquet as pq

    big = write_jsonl(tmp_path / "a.jsonl", corpus_docs[:80])
    small = [write_jsonl(tmp_path / f"s{i}.jsonl", corpus_docs[80 + i : 81 + i]) for i in range(3)]
    pq.write_table(pa.Table.from_pylist(corpus_docs[84:120]), tmp_path / "p.parquet", row_group_size=4)
    sources = [big, *small, tmp_path / "p.parquet"]
    every = big.stat().st_size // 5
    ranges = plan_ranges(sources, every)
    whole = [(str(p), r.index, r.text) for p in sources for r in read_records(p)]
    pieced = [(seg.path, i, t) for rng in ranges for seg in rng for i, t in _records(seg)]
    assert pieced == whole
    data = big.read_bytes()
    cuts = [seg for rng in ranges for seg in rng if seg.path == str(big)]
    assert len(cuts) >= 4
    for seg in cuts:  # each piece starts at a line start, with its own line numbers
        assert seg.byte_start == 0 or data[seg.byte_start - 1] == ord("\n")
        assert data[: seg.byte_start].count(b"\n") == seg.start
    assert any(len(rng) == 3 for rng in ranges)  # the three small files share one range
    assert sum(1 for rng in ranges for seg in rng if seg.path.endswith(".parquet")) > 1


# -- on a cluster ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def ray_cluster():
    """Two nodes of one CPU each; this process is connected to it, so ``--ray local`` in-process joins it
    (a connected driver keeps its cluster) and a subprocess reaches it by address."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def default_corpus(tmp_path_factory, mistral_dir) -> Path:
    from ipt_engine.corpus import write_default_corpus

    return write_default_corpus(tmp_path_factory.mktemp("corpus") / "default.jsonl")[0]


def _opts(src: Path, out: Path, **kw) -> ConvertOptions:
    return ConvertOptions(inputs=[str(src)], output=str(out), max_seq_len=N, packing="bfd", workers=0,
                          progress=False, **kw)


def _on_ray(src: Path, out: Path, *, retries: int = 2, **kw):
    from ipt_engine.data.convert_ray import RayConvertOptions, convert_on_ray

    range_bytes = src.stat().st_size // 2 + 1  # two ranges
    return convert_on_ray(_opts(src, out, **kw), RayConvertOptions(address="local", range_bytes=range_bytes,
                                                                   max_retries=retries))


def _stock(directory: Path) -> list[dict]:
    from streaming import StreamingDataset

    ds = StreamingDataset(local=str(directory), shuffle=False, batch_size=1)
    return [ds[i] for i in range(len(ds))]


def _token_multiset(samples: list[dict]) -> Counter:
    return Counter(np.concatenate([s["tokens"] for s in samples]).tolist())


def _doc_multiset(samples: list[dict]) -> Counter:
    return Counter(tuple(p.tolist()) for s in samples for p in np.split(s["tokens"], np.cumsum(s["doc_lens"])[:-1]))


@pytest.fixture(scope="module")
def local_ref(tmp_path_factory, default_corpus) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("local") / "mds"
    convert(_opts(default_corpus, out))
    return out, _stock(out)


@pytest.fixture(scope="module")
def ray_run(tmp_path_factory, ray_cluster, default_corpus) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("ray") / "mds"
    res = _on_ray(default_corpus, out)
    assert res.stats["ranges"] == 2
    return out, _stock(out)


def test_samples_are_the_local_runs_tokens(ray_run, local_ref):
    (_out, got), (_, want) = ray_run, local_ref
    assert _token_multiset(got) == _token_multiset(want)
    assert _doc_multiset(got) == _doc_multiset(want)  # and no document was cut at a range boundary
    assert all(s["tokens"].dtype == np.int32 and len(s["tokens"]) <= N for s in got)


def test_merged_index_is_the_partitions_in_order(ray_run):
    out, got = ray_run
    parts = sorted(p for p in out.iterdir() if p.name.startswith("part-"))
    assert [p.name for p in parts] == ["part-00000", "part-00001"]
    per_part = [s for p in parts for s in _stock(p)]
    assert as_pairs(got) == as_pairs(per_part)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left
    meta = json.loads((out / "ipt.json").read_text())
    assert meta["stats"]["samples"] == len(got) and meta["stats"]["tokens"] == sum(len(s["tokens"]) for s in got)


def test_ipt_train_reads_the_merged_output(ray_run, local_ref):
    from ipt_engine.train.config import LoaderConfig
    from ipt_engine.train.data import build_dataloader, plan_loader

    out, got = ray_run
    fp = json.loads((local_ref[0] / "ipt.json").read_text())["tokenizer"]
    cfg = LoaderConfig(streams={"raw": {"local": str(out)}}, shuffle=False, num_workers=0, pin_memory=False,
                       persistent_workers=False, prefetch_factor=None, drop_last=False)
    plan = plan_loader(cfg, "train_loader", fp)
    assert plan.seq_len == N
    loader = build_dataloader(plan, device_batch_size=4, seed=0, eos_id=fp["eos_id"], pad_id=0,
                              vocab_size=fp["vocab_size"])
    ds = loader.dataset
    assert len(ds) == len(got)
    assert [ds[i]["tokens"].tolist() for i in (0, len(ds) - 1)] == [got[i]["tokens"].tolist() for i in (0, -1)]
    assert next(iter(loader)) is not None


def test_bfd_fill_per_range_on_the_default_corpus(ray_run):
    """Each range packs alone, so each ends in one partly filled sample.

    On ~110-sample ranges that tail alone can cost 1%: ceil(tokens / N) samples, which no packer beats,
    give 98.9% on one half of this corpus. So: every sample but the tail is >= 99% full on average,
    the range is within one sample of that bound, and the whole range stays above 98.5%.
    """
    out, _ = ray_run
    for part in sorted(p for p in out.iterdir() if p.name.startswith("part-")):
        lens = sorted(len(s["tokens"]) for s in _stock(part))
        tokens = sum(lens)
        assert len(lens) > 50
        assert (tokens - lens[0]) / (N * (len(lens) - 1)) >= 0.99, part.name
        assert len(lens) <= -(-tokens // N) + 1, part.name
        assert tokens / (N * len(lens)) >= 0.985, part.name


def test_killed_task_is_retried_with_nothing_lost_or_doubled(tmp_path, ray_run, default_corpus, monkeypatch):
    from ipt_engine.data.convert_ray import KILL_ENV

    marker = tmp_path / "killed"
    monkeypatch.setenv(KILL_ENV, f"1:2:{marker}")  # SIGKILL range 1's worker after its 2nd shard
    out = tmp_path / "mds"
    _on_ray(default_corpus, out, shard_size=1 << 16)
    assert marker.exists()  # the worker did die mid-range
    assert len(json.loads((out / "part-00001" / "index.json").read_text())["shards"]) > 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["retried_attempts"] == 1
    assert as_pairs(_stock(out)) == as_pairs(ray_run[1])  # shard size does not change the samples
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_resume_skips_committed_ranges(tmp_path, ray_run, default_corpus, monkeypatch):
    from ipt_engine.data.convert_ray import KILL_ENV

    out = tmp_path / "mds"
    monkeypatch.setenv(KILL_ENV, f"1:1:{tmp_path / 'killed'}")
    with pytest.raises(UserError, match="1 range.*part-00001.*--resume"):
        _on_ray(default_corpus, out, retries=0)  # range 1 dies and is not retried: a partial output
    monkeypatch.delenv(KILL_ENV)
    first = json.loads((out / "manifest.json").read_text())
    assert list(first["committed"]) == ["part-00000"] and not (out / "index.json").exists()
    shard0 = out / "part-00000" / "shard.00000.mds.zstd"
    stamp = shard0.stat().st_mtime_ns, shard0.stat().st_ino
    _on_ray(default_corpus, out, resume=True)
    after = json.loads((out / "manifest.json").read_text())
    assert after["resumed_ranges"] == 1 and after["committed"]["part-00000"] == first["committed"]["part-00000"]
    assert (shard0.stat().st_mtime_ns, shard0.stat().st_ino) == stamp  # not rewritten
    assert as_pairs(_stock(out)) == as_pairs(ray_run[1])
    # A ranged output is not a local run's: resuming it without --ray is refused, in one line.
    with pytest.raises(UserError, match="cannot resume, parameters differ"):
        convert(_opts(default_corpus, out, resume=True))


def _one_error_line(capsys, argv) -> tuple[int, str]:
    from ipt_engine.cli import main

    code = main(argv)
    err = [e for e in capsys.readouterr().err.strip().splitlines() if "ipt convert" in e or "Traceback" in e]
    assert len(err) == 1 and "Traceback" not in err[0], err
    return code, err[0]


def test_cli_on_the_cluster_and_its_one_line_errors(tmp_path, capsys, ray_run, default_corpus):
    from ipt_engine.cli import main

    out = tmp_path / "cli"
    argv = ["convert", str(default_corpus), "-o", str(out), "--packing", "bfd", "--ray", "local",
            "--range-bytes", str(default_corpus.stat().st_size // 2 + 1), "--workers", "0", "--no-progress"]
    assert main(argv) == 0
    assert "ranges     2" in capsys.readouterr().out
    assert as_pairs(_stock(out)) == as_pairs(ray_run[1])
    code, line = _one_error_line(capsys, [*argv[:3], str(tmp_path / "o2"), "--ray", "nowhere"])
    assert code == 2 and "expected auto, local, ray://HOST:PORT or HOST:PORT" in line
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "good one"}, {"text": "good two"}],
                      raw_lines={2: b'{"text": "ok", \n'})
    code, line = _one_error_line(capsys, ["convert", str(bad), "-o", str(tmp_path / "o3"), "--ray", "local",
                                          "--no-progress"])
    assert code == 2 and f"{bad}:3: malformed JSON" in line  # raised inside a task, one line here


def test_resume_adopts_a_partition_committed_after_the_driver_died(tmp_path, ray_run, default_corpus):
    import shutil

    out = tmp_path / "mds"
    shutil.copytree(ray_run[0], out)
    # As if the driver was killed after part-00001's rename, before it recorded the range and merged.
    m = json.loads((out / "manifest.json").read_text())
    del m["committed"]["part-00001"]
    m["complete"] = False
    (out / "manifest.json").write_text(json.dumps(m))
    (out / "index.json").unlink()
    (out / "ipt.json").unlink()
    (out / ".tmp-part-00001-deadbeef").mkdir()  # and a dead attempt's leftovers
    _on_ray(default_corpus, out, resume=True)
    after = json.loads((out / "manifest.json").read_text())
    assert after["committed"]["part-00001"]["adopted"] is True and after["resumed_ranges"] == 2
    assert as_pairs(_stock(out)) == as_pairs(ray_run[1])
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_killed_driver_resumes_exactly(tmp_path, ray_cluster, ray_run, default_corpus):
    """SIGKILL the CLI driver once its first range is committed (its tasks die with it), then --resume:
    the committed ranges are kept, the rest redone, the samples are those of an uninterrupted run."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO
    from tests.helpers_process import manifest_has, sigkill_when

    out = tmp_path / "mds"
    argv = [sys.executable, "-m", "ipt_engine", "convert", str(default_corpus), "-o", str(out), "--packing", "bfd",
            "--max-seq-len", str(N), "--workers", "0", "--no-progress", "--ray", ray_cluster.address,
            "--range-bytes", str(default_corpus.stat().st_size // 6 + 1)]  # six ranges, two at a time
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    sigkill_when(proc, manifest_has(out, "committed"), timeout=300)
    manifest = out / "manifest.json"
    partial = json.loads(manifest.read_text())
    assert not partial["complete"] and 1 <= len(partial["committed"]) < 6, partial
    assert not (out / "index.json").exists()
    again = subprocess.run([*argv, "--resume"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    final = json.loads(manifest.read_text())
    assert final["complete"] and len(final["committed"]) == 6
    assert all(final["committed"][k] == v for k, v in partial["committed"].items())  # kept, not redone
    assert _doc_multiset(_stock(out)) == _doc_multiset(ray_run[1])  # 0 lost, 0 duplicated
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
