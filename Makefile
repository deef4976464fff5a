# The README's two commands: `make demo` (set up, run the main job) and `make test` (set up, run tests).
SHELL := /bin/bash
export VLLM_CPU_KVCACHE_SPACE ?= 1
export VLLM_ENABLE_V1_MULTIPROCESSING ?= 0
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test lint bench
setup:
	scripts/setup.sh all

demo: setup
	.venv/bin/ipt pipeline

test: setup
	scripts/test.sh

lint: setup
	.venv/bin/ruff check .
	.venv/bin/mypy

bench: setup
	.venv/bin/python -m benchmarks train loader convert templify synth
