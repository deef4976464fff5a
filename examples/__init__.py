"""Example configurations, shipped inside the package as ``ipt_engine.examples``.

In a source checkout they are the files of ``examples/``; after ``pip install ipt-engine`` the same
files are package data, so ``ipt pipeline`` finds its configs without a checkout.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def example_path(name: str) -> Path:
    """The path of the shipped example config ``name`` (e.g. ``tiny-cpu.yaml``)."""
    path = Path(str(resources.files(__name__).joinpath(name)))
    if not path.is_file():
        shipped = sorted(p.name for p in path.parent.glob("*.yaml"))
        raise FileNotFoundError(f"no example config {name!r}; shipped: {', '.join(shipped)}")
    return path
