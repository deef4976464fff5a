#!/usr/bin/env bash
# The test suite: lint (ruff, mypy), then pytest in the train env (pure-Python, data, kernel-interpreter and training
# tests), then the tests that need vLLM in the synth env.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/mypy  # ipt_engine/, strict on io/, data/, synth/ (pyproject [tool.mypy])
TRITON_INTERPRET=${TRITON_INTERPRET:-1} .venv/bin/python -m pytest -q -m "not synth" -p no:cacheprovider "$@"
if ls tests/synth/test_*.py >/dev/null 2>&1; then
  .venv-synth/bin/python -m pytest -q -m synth -p no:cacheprovider tests/synth
fi
