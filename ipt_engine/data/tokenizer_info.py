"""Loading a tokenizer for a stage, and the fingerprint that ties shards to it.

``ipt convert`` records the fingerprint in the shard directory's ``ipt.json``; ``ipt train`` compares
it with the model's tokenizer and refuses a mismatch, because training on token ids from another
vocabulary silently produces garbage. The vocabulary hash covers every (token, id) pair, so two
tokenizers that merely share a name or a size do not pass as one.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ipt_engine.errors import UserError

DEFAULT_TOKENIZER = "mistral-v1"


def resolve_tokenizer_path(name_or_path: str) -> str:
    """Map the built-in name ``mistral-v1`` to its materialized directory; anything else is passed on."""
    if name_or_path == DEFAULT_TOKENIZER:
        from ipt_engine.assets import mistral_tokenizer_dir

        return str(mistral_tokenizer_dir())
    return name_or_path


def load_tokenizer(name_or_path: str) -> Any:
    """Load a fast Hugging Face tokenizer by local path, hub id or ``mistral-v1``; one-line error on failure."""
    path = resolve_tokenizer_path(name_or_path)
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path, use_fast=True)
    except Exception as e:  # transformers raises OSError, ValueError, EnvironmentError, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load tokenizer {name_or_path!r}: {first}") from None
    if not getattr(tok, "is_fast", False):
        raise UserError(f"tokenizer {name_or_path!r} has no fast (Rust) implementation; convert it to tokenizer.json")
    return tok


def vocab_hash(tokenizer: Any) -> str:
    vocab = tokenizer.get_vocab()
    blob = json.dumps(sorted(vocab.items(), key=lambda kv: kv[1]), ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def tokenizer_fingerprint(tokenizer: Any, name: str | None = None) -> dict[str, Any]:
    """What ``ipt.json`` records about the tokenizer, and what training checks against."""
    return {
        "name": name or getattr(tokenizer, "name_or_path", None),
        "vocab_size": len(tokenizer),
        "vocab_hash": vocab_hash(tokenizer),
        "bos_id": tokenizer.bos_token_id,
        "eos_id": tokenizer.eos_token_id,
        "pad_id": tokenizer.pad_token_id,
    }


def same_vocabulary(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.get("vocab_hash") == b.get("vocab_hash") and a.get("vocab_size") == b.get("vocab_size")
