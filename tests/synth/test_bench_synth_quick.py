"""``python -m benchmarks.synth --quick --profile DIR``: a schema-valid results file and a profile.

Runs the benchmark as its own process (as the harness does), so its vLLM engine does not share
process state with the session's engine fixture.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.schema import validate_file

pytestmark = pytest.mark.synth

REPO = Path(__file__).resolve().parents[2]


def test_quick_synth_benchmark_writes_valid_results_and_profile(tmp_path: Path, format_model: str) -> None:
    out, prof = tmp_path / "results", tmp_path / "profile"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "benchmarks.synth", "--quick", "--out-dir", str(out),
                        "--profile", str(prof)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]

    [path] = out.glob("synthesize-corpus-quick-*.json")
    results = validate_file(path)
    doc = json.loads(path.read_text())
    assert doc["quick"] is True and doc["server"] == {"skipped": "--quick"}
    names = [c.name for c in results.cases]
    plain_rows = [c for c in results.cases if "plain LLM.generate" in c.name]
    assert len(plain_rows) == 1 and "M=2" in plain_rows[0].name, names
    assert any(c.name.startswith("synthesize +pipelined M=2 (generated tokens/s)") for c in results.cases)
    for c in results.cases:  # one repeat: every spread collapses onto its median
        assert c.repeats == 1
        assert c.spread.baseline == pytest.approx((c.baseline, c.baseline))
        assert c.spread.ours == pytest.approx((c.ours, c.ours))

    conf = doc["configurations"]["2"]
    assert {"paper", "+exact-budget", "+pipelined", "plain-generate"} <= set(conf)
    assert not {"+ngram", "serve-pipelined"} & set(conf)
    plain = plain_rows[0].baseline_detail
    texts = plain_rows[0].params["texts"]
    assert plain["requests"] == texts  # one request per text: one round only
    assert 0 < plain["generated_tokens"] <= texts * plain_rows[0].params["max_tokens"]
    assert plain["tokens_per_s"] == pytest.approx(plain["generated_tokens"] / plain["seconds"])
    ours = plain_rows[0].ours_detail
    assert ours["requests"] >= texts and ours["carried_entries"] > 0  # ours did carry rounds
    assert "one round only" in doc["notes"].lower() or "ONE round only" in doc["notes"]

    trace = json.loads(Path(doc["profile"]["trace"]).read_text())
    assert trace["traceEvents"]
    md = Path(doc["profile"]["table"]).read_text()
    assert "Top 15" in md and "Time per group" in md
    assert doc["profile"]["steps"] >= 1 and doc["profile"]["top"]
