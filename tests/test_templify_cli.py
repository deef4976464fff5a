"""`ipt templify`: released-format input, summary, one-line errors, workers, resume after a crash."""

from __future__ import annotations

import json
import random

import pytest
import zstandard

from ipt_engine.cli import main
from ipt_engine.io import parts as parts_mod


def _collection(rng: random.Random, i: int) -> list[dict]:
    n = rng.randrange(1, 4)
    out = []
    for k in range(n):
        qa = [{"Q": f"Question {i}.{k}.{j}?", "A": f"answer {rng.random():.6f}"} for j in range(rng.randrange(0, 4))]
        out.append({"context": f"Text {i}.{k} " + "word " * rng.randrange(1, 20), "QA_list": qa,
                    "inherit_from_prev": k > 0 and bool(qa), "followed_by_next": k < n - 1})
    return out


@pytest.fixture
def released(tmp_path):
    rng = random.Random()
    path = tmp_path / "in.jsonl"
    with open(path, "w") as f:
        for i in range(120):
            f.write(json.dumps(_collection(rng, i)) + "\n")
    return path


def _texts(out_dir) -> list[str]:
    rows = []
    for p in sorted(out_dir.glob("part-*.jsonl.zst")):
        data = zstandard.ZstdDecompressor().stream_reader(open(p, "rb")).read().decode()
        rows += [json.loads(line)["text"] for line in data.splitlines()]
    return rows


def test_writes_texts_and_summary(released, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["templify", str(released), "--output", str(out), "--part-size", "50"]) == 0
    summary = capsys.readouterr().out
    for word in ("collections", "texts", "pairs", "texts/s", "rejects"):
        assert word in summary
    assert "120" in summary
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and len(manifest["outputs"]) == 3
    texts = _texts(out)
    assert texts and all(isinstance(t, str) and t for t in texts)
    assert manifest["stats"]["texts"] == len(texts)


def test_workers_and_part_size_do_not_change_output(released, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["templify", str(released), "-o", str(a), "--seed", "7"]) == 0
    assert main(["templify", str(released), "-o", str(b), "--seed", "7", "--workers", "2", "--part-size", "33"]) == 0
    assert _texts(a) == _texts(b)


def test_malformed_line_is_one_line_error(released, tmp_path, capsys):
    with open(released, "a") as f:
        f.write(json.dumps([{"context": "x", "QA_list": "nope", "inherit_from_prev": False}]) + "\n")
    assert main(["templify", str(released), "-o", str(tmp_path / "o")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # above it: the progress bar
    assert last == f"ipt templify: error: {released}:121: entry 0: 'QA_list' is str, not a list"
    assert main(["templify", str(released), "-o", str(tmp_path / "s"), "--on-error", "skip"]) == 0
    rejects = (tmp_path / "s" / "rejects.jsonl").read_text().splitlines()
    assert len(rejects) == 1 and json.loads(rejects[0])["index"] == 121


def test_resume_after_crash_loses_and_repeats_nothing(released, tmp_path, monkeypatch):
    ref = tmp_path / "ref"
    assert main(["templify", str(released), "-o", str(ref), "--part-size", "20"]) == 0
    out = tmp_path / "out"
    real, calls = parts_mod.write_part, []

    def crashing(directory, index, rows):
        calls.append(index)
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed while writing the third part
        return real(directory, index, rows)

    monkeypatch.setattr(parts_mod, "write_part", crashing)
    assert main(["templify", str(released), "-o", str(out), "--part-size", "20"]) == 130
    monkeypatch.setattr(parts_mod, "write_part", real)
    assert len(list(out.glob("part-*.jsonl.zst"))) == 2
    assert main(["templify", str(released), "-o", str(out), "--part-size", "20", "--resume"]) == 0
    assert _texts(out) == _texts(ref)
