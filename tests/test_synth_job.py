"""The synthesis job file: what ``ipt pipeline`` hands to the synthesis environment, validated like every
other config (one line naming the key), and found beside the running environment."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from ipt_engine.commands.pipeline import synth_python
from ipt_engine.configuration import load
from ipt_engine.errors import UserError
from ipt_engine.synth.job import SynthJob, main


def test_job_round_trips_through_yaml(tmp_path):
    job = {"inputs": ["corpus.jsonl"], "output": "out", "model": None, "rounds": 3, "limit": 8, "part_size": 4,
           "config": {"engine": {"max_model_len": 1024}, "sampling": {"max_tokens": 64}}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    loaded = load(SynthJob, path)
    assert loaded.rounds == 3 and loaded.limit == 8 and loaded.model is None and loaded.resume
    assert loaded.config.engine.max_model_len == 1024 and loaded.config.sampling.max_tokens == 64


@pytest.mark.parametrize("bad, message", [
    ({"rounds": 0}, "rounds: must be >= 1, got 0"),
    ({"config": {"sampling": {"max_tokens": 5000}}}, "config.sampling.max_tokens: must be smaller than"),
    ({"colour": 1}, "colour"),
])
def test_bad_job_is_one_line_naming_the_key(tmp_path, bad, message):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"inputs": ["c.jsonl"], "output": "o", **bad}))
    with pytest.raises(UserError, match=message) as e:
        load(SynthJob, path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_job_main_reports_errors_in_one_line(tmp_path, capsys):
    path = tmp_path / "job.yaml"
    path.write_text("inputs: [c.jsonl]\noutput: o\nrounds: -1\n")
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rounds: must be >= 1, got -1" in err


def test_synth_python_prefers_the_environment_variable_then_the_sibling_venv(monkeypatch, tmp_path):
    monkeypatch.setenv("IPT_SYNTH_PYTHON", str(tmp_path / "py"))
    assert synth_python() == tmp_path / "py"
    monkeypatch.delenv("IPT_SYNTH_PYTHON")
    sibling = Path(sys.prefix).parent / ".venv-synth" / "bin" / "python"
    monkeypatch.chdir(tmp_path)
    assert synth_python() == (sibling if sibling.exists() else None)


def test_job_help_and_usage(capsys):
    assert main(["--help"]) == 0 and "JOB.yaml" in capsys.readouterr().out
    assert main([]) == 2 and capsys.readouterr().err.startswith("usage: python -m ipt_engine.synth.job")
