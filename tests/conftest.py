"""Shared fixtures: offline assets are materialized once per test session into the user cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def mistral_dir() -> Path:
    from ipt_engine.assets import mistral_tokenizer_dir

    return mistral_tokenizer_dir()


@pytest.fixture(scope="session")
def mistral_tok(mistral_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(mistral_dir)


@pytest.fixture(scope="session")
def corpus_docs() -> list[dict[str, str]]:
    """The embedded default corpus (real stdlib documentation), first 120 documents."""
    from itertools import islice

    from ipt_engine.corpus import iter_stdlib_documents

    return list(islice(iter_stdlib_documents(), 120))
