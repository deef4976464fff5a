"""Killing a stage's process at a chosen moment, for the crash-and-resume tests."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def sigkill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float) -> None:
    """Poll ``ready()`` every 20 ms while ``proc`` runs (at most ``timeout`` s), then SIGKILL it."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if ready():
                break
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def manifest_has(out: Path, key: str) -> Callable[[], bool]:
    """A ``ready`` for :func:`sigkill_when`: the output's manifest has a non-empty ``key`` (a first part
    committed: ``outputs`` for the part stages, ``committed`` for ``convert --ray``)."""

    def ready() -> bool:
        try:
            return bool(json.loads((out / "manifest.json").read_text()).get(key))
        except (FileNotFoundError, json.JSONDecodeError):
            return False

    return ready
