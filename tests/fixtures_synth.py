"""Shared fixtures for the synthesis tests: the synthesizer's real tokenizer, loaded once per process."""

from __future__ import annotations

import functools

import pytest


@functools.lru_cache(maxsize=1)
def _load():
    from ipt_engine.data.tokenizer_info import load_tokenizer

    return load_tokenizer("mistral-v1")


@pytest.fixture(scope="session")
def mistral_tokenizer():
    return _load()
