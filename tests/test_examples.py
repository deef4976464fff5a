"""The example configs ship inside the package (``ipt_engine.examples``), so an installed ``ipt``
finds them without a source checkout."""

from __future__ import annotations

from pathlib import Path

import pytest
from ipt_engine.examples import example_path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_every_example_config_is_package_data():
    names = sorted(p.name for p in EXAMPLES.glob("*.yaml"))
    assert "tiny-cpu.yaml" in names and "synth-cpu.yaml" in names
    for name in names:
        assert example_path(name).read_bytes() == (EXAMPLES / name).read_bytes()


def test_unknown_example_names_what_ships():
    with pytest.raises(FileNotFoundError, match="no example config 'nope.yaml'; shipped: .*tiny-cpu.yaml"):
        example_path("nope.yaml")


def test_pyproject_ships_the_examples_package():
    import tomllib

    cfg = tomllib.loads((EXAMPLES.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "ipt_engine.examples" in cfg["packages"]
    assert cfg["package-dir"]["ipt_engine.examples"] == "examples"
    assert "*.yaml" in cfg["package-data"]["*"]
