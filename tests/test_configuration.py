"""The one configuration system: YAML + flags + dotted overrides -> pydantic, one error line, --print-config.

The expected lines are written out by hand from the rule each field states (``gt=0`` -> ``must be > 0``),
not computed with the formatter under test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Annotated, Literal

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import Field, model_validator

from ipt_engine.cli import main
from ipt_engine.configuration import Invalid, Section, dump_yaml, load, schema_text
from ipt_engine.errors import UserError

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "examples" / "tiny-cpu.yaml"


class Inner(Section):
    """A nested section."""

    lr: Annotated[float, Field(gt=0)] = 0.1
    """Learning rate."""
    steps: Annotated[int, Field(ge=1)] = 1
    mode: Literal["a", "b"] = "a"
    size: Annotated[int, Field(gt=0)] | Literal["auto"] = 1
    flag: bool = False


class Outer(Section):
    """A toy stage config."""

    name: str
    train: Inner = Field(default_factory=Inner)
    items: dict[str, Inner] = Field(default_factory=dict)
    named: dict[str, str | Inner] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _rule(self) -> Outer:
        if self.train.mode == "b" and self.train.steps < 2:
            raise Invalid("mode b needs steps >= 2", "train", "mode")
        return self


def _error(*overrides: str, path: Path | None = None, flags: dict | None = None) -> str:
    with pytest.raises(UserError) as e:
        load(Outer, path, list(overrides), flags=flags)
    text = str(e.value)
    assert "\n" not in text
    return text


def test_error_lines_name_source_key_rule_and_value(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("name: x\ntrain:\n  lr: -1\n")
    assert _error(path=cfg) == f"{cfg}: train.lr: must be > 0, got -1"
    cfg.write_text("name: x\ntrain: {steps: 0, mode: c}\n")
    assert _error(path=cfg) == f"{cfg}: train.steps: must be >= 1, got 0 (and 1 more error)"
    cfg.write_text("name: x\ntrain: {mode: c}\n")
    assert _error(path=cfg) == f"{cfg}: train.mode: must be one of 'a' or 'b', got 'c'"
    cfg.write_text("name: x\ntrain: {lrr: 1}\n")
    assert _error(path=cfg) == f"{cfg}: train.lrr: unknown key (known keys here: flag, lr, mode, size, steps)"
    cfg.write_text("train: {}\n")
    assert _error(path=cfg) == f"{cfg}: name: missing required key"
    cfg.write_text("name: x\ntrain: {mode: b}\n")
    assert _error(path=cfg) == f"{cfg}: train.mode: mode b needs steps >= 2"
    cfg.write_text("name: x\nitems: {first: {steps: x}}\n")
    assert _error(path=cfg) == f"{cfg}: items.first.steps: must be an integer, got 'x'"
    cfg.write_text("name: x\ntrain: [1]\n")
    assert _error(path=cfg) == f"{cfg}: train: must be a mapping, got [1]"
    cfg.write_text("- 1\n")
    assert _error(path=cfg) == f"{cfg}: must be a mapping of config keys at the top level, got list"


def test_overrides_and_flags_are_blamed_as_such(tmp_path):
    assert _error("name=x", "train.size=0") == "command line: train.size: must be > 0 or 'auto', got 0"
    assert _error("name=x", "train.flag=maybe") == "command line: train.flag: must be true or false, got 'maybe'"
    assert _error("name=x", flags={"train.steps": ("--steps", 0)}) == "--steps: must be >= 1, got 0"
    assert _error("name=x", "named.a=[1]") == "command line: named.a: must be a string or a mapping, got [1]"
    # a mapping was meant for the section alternative: its error, not "must be a string"
    assert _error("name=x", "named.a={lr: 0}") == "command line: named.a.lr: must be > 0, got 0"
    assert "expected KEY=VALUE" in _error("name")
    assert "train.lr is a value, not a section" in _error("train.lr=1", "train.lr.x=1")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: x\n")
    ok = load(Outer, cfg, ["train.lr=1e-4", "train.size=auto", "items.z.steps=3", "train.steps=2"],
              flags={"train.mode": ("--mode", "b")})
    assert (ok.train.lr, ok.train.size, ok.items["z"].steps, ok.train.mode) == (1e-4, "auto", 3, "b")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lr=st.floats(max_value=0, allow_nan=False, allow_infinity=False) | st.integers(max_value=0),
       steps=st.integers(max_value=0))
def test_any_out_of_range_value_gives_the_rule_and_the_value(lr, steps):
    typed = yaml.safe_load(repr(lr))  # YAML 1.1 reads `-1e-05` (no dot) as a string: shown quoted, as given
    assert _error("name=x", f"train.lr={lr!r}") == f"command line: train.lr: must be > 0, got {typed!r}"
    assert _error("name=x", f"train.steps={steps}") == f"command line: train.steps: must be >= 1, got {steps}"


@settings(max_examples=40, deadline=None)
@given(lr=st.floats(min_value=1e-9, max_value=1e3), steps=st.integers(min_value=1, max_value=10**6),
       mode=st.sampled_from(["a", "b"]), size=st.integers(min_value=1, max_value=64) | st.just("auto"),
       names=st.lists(st.text("abcxyz", min_size=1, max_size=5), max_size=3, unique=True))
def test_print_config_output_loads_back_to_the_same_config(lr, steps, mode, size, names):
    overrides = ["name=run", f"train.lr={lr!r}", f"train.steps={max(steps, 2)}", f"train.mode={mode}",
                 f"train.size={size}", *[f"items.{n}.steps={steps}" for n in names]]
    cfg = load(Outer, None, overrides)
    again = Outer.model_validate(yaml.safe_load(dump_yaml(cfg)))
    assert again == cfg and again.train.lr == lr and sorted(again.items) == sorted(names)


def test_schema_lists_fields_with_descriptions():
    text = schema_text(Outer)
    assert text.splitlines()[0] == "A toy stage config."
    assert "train.lr: number = 0.1\n    Learning rate." in text
    assert "train.size: integer | 'auto' = 1" in text
    assert "items.<name>.mode: 'a' | 'b' = 'a'" in text
    assert "name: string (required)" in text


# --- the stages -------------------------------------------------------------------------------------


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_print_config_is_the_resolved_config(capsys):
    code, out, _ = _cli(capsys, "train", str(TINY), "max_duration=4ba", "optimizer.lr=1e-3", "--print-config")
    assert code == 0
    printed = yaml.safe_load(out)
    source = yaml.safe_load(TINY.read_text())
    assert printed["max_duration"] == "4ba" and printed["optimizer"]["lr"] == 1e-3
    assert printed["train_loader"]["streams"].keys() == source["train_loader"]["streams"].keys()
    assert printed["model"]["pretrained"] is False  # resolved: no weights path -> from scratch
    assert printed["loggers"]["console"] == "compact"
    code, out, _ = _cli(capsys, "train", str(TINY), "--verbose", "--print-config")
    assert code == 0 and yaml.safe_load(out)["loggers"]["console"] == "full"


def test_train_schema_and_errors_through_the_cli(capsys, tmp_path):
    code, out, _ = _cli(capsys, "train", "--schema")
    assert code == 0 and "model.attn_implementation: 'packed' | 'flex' | 'sdpa_dense' | 'sdpa_segments' = 'packed'" in out
    assert "global_train_batch_size: integer (required)" in out
    bad = tmp_path / "config.yaml"
    source = yaml.safe_load(TINY.read_text())
    source.setdefault("optimizer", {})["lr"] = -1
    bad.write_text(yaml.safe_dump(source))
    code, _, err = _cli(capsys, "train", str(bad), "--print-config")
    assert code == 2 and err == f"ipt train: error: {bad}: optimizer.lr: must be > 0, got -1\n"


def test_python_m_train_reports_the_same_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ipt_engine.train", str(TINY), "optimizer.lr=-1"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "ipt train: error: command line: optimizer.lr: must be > 0, got -1"


def test_cli_import_does_not_import_pydantic_or_yaml():
    code = ("import sys, ipt_engine.cli as c; c.build_parser(); "
            "print(sorted(m for m in ('pydantic', 'yaml', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_convert_print_config_merges_file_flags_and_overrides(capsys, tmp_path):
    cfg = tmp_path / "convert.yaml"
    cfg.write_text("max_seq_len: 512\npacking: bfd\ncompression: gz\n")
    code, out, _ = _cli(capsys, "convert", "--config", str(cfg), "--max-seq-len", "4096", "--set", "bfd_window=8",
                        "--compression", "none", "--print-config")
    assert code == 0
    assert yaml.safe_load(out) == {"tokenizer": "mistral-v1", "max_seq_len": 4096, "packing": "bfd",
                                   "compression": None, "text_field": "text", "shard_size": 1 << 26,
                                   "bfd_window": 8}
    cfg.write_text("max_seq_len: 1\n")
    code, _, err = _cli(capsys, "convert", "in.jsonl", "-o", str(tmp_path / "o"), "--config", str(cfg))
    assert (code, err) == (2, f"ipt convert: error: {cfg}: max_seq_len: must be >= 2, got 1\n")
    code, _, err = _cli(capsys, "convert", "in.jsonl", "-o", str(tmp_path / "o"), "--packing", "greedy")
    assert (code, err) == (2, "ipt convert: error: --packing: must be one of 'concat' or 'bfd', got 'greedy'\n")
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_convert_help_states_the_config_defaults(capsys):
    from ipt_engine.data.convert_config import ConvertConfig

    code, out, _ = _cli(capsys, "convert", "--help")
    flat = " ".join(out.split())
    d = ConvertConfig()
    assert code == 0
    for needle in (f"'{d.tokenizer}' (default)", f"(default {d.max_seq_len})", f"{d.packing} (default)",
                   f"default {d.compression}", f"(default '{d.text_field}')", f"(default {d.shard_size >> 20} MiB)",
                   f"(default {d.bfd_window})"):
        assert needle in flat, needle


@settings(max_examples=25, deadline=None)
@given(lr=st.floats(min_value=1e-7, max_value=1.0), batch=st.integers(min_value=1, max_value=4096),
       steps=st.integers(min_value=1, max_value=10**7), attn=st.sampled_from(["packed", "flex", "sdpa_dense", "sdpa_segments"]),
       proportion=st.floats(min_value=0.01, max_value=1.0))
def test_train_print_config_loads_back_to_the_same_config(lr, batch, steps, attn, proportion):
    from ipt_engine.train.config import TrainConfig, load_config

    cfg = load_config(TINY, [f"optimizer.lr={lr!r}", f"global_train_batch_size={batch}", f"max_duration={steps}ba",
                             f"model.attn_implementation={attn}", f"train_loader.streams.raw.proportion={proportion!r}"])
    again = TrainConfig.model_validate(yaml.safe_load(dump_yaml(cfg)))
    assert again == cfg
    assert (again.optimizer.lr, again.global_train_batch_size, again.max_duration) == (lr, batch, f"{steps}ba")
    assert again.model.attn_implementation == attn and again.train_loader.streams["raw"].proportion == proportion
