"""Shared fixtures for the vLLM tests: the format-writing tiny model, short real texts, one engine.

vLLM starts in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) with a 1 GiB CPU KV cache, so a start
costs seconds; the engine fixture is shared by the whole session. The format model is built once
into the asset cache (``$IPT_CACHE``, else ``<repo>/.cache``) and reused by later sessions.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("IPT_CACHE", str(REPO / ".cache"))

# Small but real settings: float32 so that batch composition cannot flip a greedy choice.
ENGINE_CONFIG = {
    "engine": {"max_model_len": 2048, "enforce_eager": True, "dtype": "float32"},
    "sampling": {"max_tokens": 160},
}


@pytest.fixture(scope="session")
def format_model() -> str:
    from ipt_engine.synth.format_model import format_model_dir

    return str(format_model_dir())


@pytest.fixture(scope="session")
def texts() -> list[str]:
    """Twelve paragraph-sized real texts (standard-library docstrings)."""
    from ipt_engine.synth.format_model import corpus_texts

    return corpus_texts()[100:112]


@pytest.fixture()
def corpus_file(tmp_path: Path, texts: list[str]) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


@pytest.fixture(scope="session")
def engine(format_model: str):
    from ipt_engine.synth.config import from_dict
    from ipt_engine.synth.engines import make_engine

    eng = make_engine("vllm", format_model, from_dict(ENGINE_CONFIG))
    yield eng
    eng.close()
