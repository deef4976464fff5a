"""run_part_stage: --limit across sources and resumes, bounded read-ahead with workers."""

from __future__ import annotations

import functools
import json

import pytest

from ipt_engine.io.parts import run_part_stage


def echo_part(tag: str, index: int, records):
    return [{"text": r.text, "tag": tag, "part": index} for r in records], {"records": len(records)}


def _read_parts(out):
    import zstandard

    rows = []
    for name in sorted(p.name for p in out.glob("part-*.jsonl.zst")):
        data = zstandard.ZstdDecompressor().decompress((out / name).read_bytes(), max_output_size=1 << 24)
        rows += [json.loads(line) for line in data.decode().splitlines()]
    return rows


@pytest.fixture
def two_files(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps({"text": f"a{i}"}) + "\n" for i in range(5)))
    b.write_text("".join(json.dumps({"text": f"b{i}"}) + "\n" for i in range(5)))
    return [a, b]


def _run(sources, out, **kw):
    kw.setdefault("resume", False)
    return run_part_stage(stage="t", sources=sources, output=out, params={"p": 1},
                          process=functools.partial(echo_part, "x"), part_size=kw.pop("part_size", 3), **kw)


def test_limit_takes_the_first_records_across_sources(two_files, tmp_path):
    _run(two_files, tmp_path / "o", limit=7)
    assert [r["text"] for r in _read_parts(tmp_path / "o")] == ["a0", "a1", "a2", "a3", "a4", "b0", "b1"]


def test_limit_counts_records_of_earlier_runs_on_resume(two_files, tmp_path, monkeypatch):
    from ipt_engine.io import parts

    real = parts.write_part
    calls = {"n": 0}

    def crash_on_second(directory, index, rows):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(directory, index, rows)

    monkeypatch.setattr(parts, "write_part", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        _run(two_files, tmp_path / "o", limit=8)
    monkeypatch.setattr(parts, "write_part", real)
    _run(two_files, tmp_path / "o", limit=8, resume=True)
    assert [r["text"] for r in _read_parts(tmp_path / "o")] == ["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2"]


def test_workers_give_the_same_parts(two_files, tmp_path):
    _run(two_files, tmp_path / "one", part_size=2)
    _run(two_files, tmp_path / "two", part_size=2, workers=2)
    assert _read_parts(tmp_path / "one") == _read_parts(tmp_path / "two")
