"""The benchmark harness: one results format, SUMMARY.md regenerated from it, and every CPU suite's
quick mode run end to end (the smoke run CI relies on; figures from it are not quoted anywhere)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.common import case
from benchmarks.schema import SchemaError, validate, validate_file
from benchmarks.summary import render

ROOT = Path(__file__).resolve().parent.parent
ENV = {"python": "3.11.7", "torch": "2.7.0", "triton": None, "vllm": None, "transformers": None,
       "cpu": "Test CPU", "gpu": None}


def _doc(suite: str, timestamp: str, cases: list[dict]) -> dict:
    return {"suite": suite, "timestamp": timestamp, "commit": "abc1234", "env": ENV, "cases": cases}


def test_case_ratio_direction_and_schema():
    faster = case("t", {}, "s", 4.0, 2.0, higher_is_better=False, repeats=3,
                  spread={"baseline": [3.5, 4.5], "ours": [1.8, 2.2]})
    assert faster["ratio"] == 2.0
    validate(_doc("x", "2026-12-01T00:00:00+0000", [faster]))
    wrong = dict(faster, ratio=0.5)
    with pytest.raises(SchemaError, match="ratio 0.5 disagrees"):
        validate(_doc("x", "2026-12-01T00:00:00+0000", [wrong]))
    with pytest.raises(SchemaError, match="cases"):
        validate(_doc("x", "2026-12-01T00:00:00+0000", []))


def test_summary_takes_the_newest_file_per_suite_and_machine(tmp_path):
    old = case("m", {}, "tok/s", 100.0, 150.0, repeats=1)
    new = case("m", {}, "tok/s", 100.0, 200.0, repeats=3, spread={"baseline": [90.0, 110.0], "ours": [1.9e5, 2.1e5]})
    (tmp_path / "x-test-cpu-20261201.json").write_text(json.dumps(_doc("x", "2026-12-01T00:00:00+0000", [old])))
    (tmp_path / "x-test-cpu-20261202.json").write_text(json.dumps(
        dict(_doc("x", "2026-12-02T00:00:00+0000", [new]), notes="the profiler showed Y")))
    (tmp_path / "broken-test-cpu-20261202.json").write_text(json.dumps({"suite": "broken"}))
    (tmp_path / "kernels-aot-20261202.json").write_text(json.dumps({"rows": []}))  # not a ratio record
    text = render(tmp_path)
    rows = [line for line in text.splitlines() if line.startswith("| x |")]
    assert rows == ["| x | m | tok/s | 100 | 200 | **2.00×** | 90.00–110 · 190k–210k | 3 | Test CPU | 2026-12-02 "
                    "| [x-test-cpu-20261202.json](x-test-cpu-20261202.json) |"]
    assert "### x (x-test-cpu-20261202.json)" in text and "the profiler showed Y" in text
    assert "`broken-test-cpu-20261202.json`" in text and "kernels-aot" not in text


def test_committed_results_follow_the_schema():
    from benchmarks.schema import RESULTS, results_files

    files = results_files(RESULTS)
    assert files
    for f in files:
        validate_file(f)


def test_quick_run_of_every_cpu_suite(tmp_path):
    """`python -m benchmarks --quick` over the train-env suites (synth's quick run is in tests/synth)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path),
                           "train", "loader", "convert", "templify", "attention"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[bench] skip attention: needs a CUDA GPU" in done.stdout
    written = {f.name.split("-")[0] for f in tmp_path.glob("*.json")}
    assert written == {"train", "loader", "convert", "templify"}
    for f in tmp_path.glob("*.json"):
        assert validate_file(f).cases
    assert {f.name.split("-")[0] for f in tmp_path.glob("*.png")} == written  # one picture per suite
    summary = (tmp_path / "SUMMARY.md").read_text()
    for suite in written:
        assert f"| {suite} |" in summary


def test_ipt_bench_and_the_harness_share_one_set_of_options(tmp_path, capsys):
    import benchmarks.__main__ as harness
    from ipt_engine.bench_options import SUITE_NAMES
    from ipt_engine.cli import main

    assert tuple(harness.SUITES) == SUITE_NAMES
    for name in ("train.json", "other.txt"):  # a results file of the schema, and something else
        (tmp_path / name).write_text(json.dumps(_doc("train", "2026-12-01T00:00:00", [case(
            "step", {}, "s", 2.0, 1.0, higher_is_better=False)])) if name.endswith(".json") else "x")
    assert main(["bench", "--summary", "--out", str(tmp_path)]) == 0
    summary = (tmp_path / "SUMMARY.md").read_text()
    assert "| train | step | s | 2.00 | 1.00 | **2.00×** |" in summary and "other.txt" not in summary
    assert main(["bench", "nosuch"]) == 2 and "unknown suite" in capsys.readouterr().err
