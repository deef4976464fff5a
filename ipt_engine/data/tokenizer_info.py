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


class BackendTokenizer:
    """The Rust tokenizer of a Hugging Face tokenizer directory, with the special-token ids beside it.

    Conversion tokenizes with the Rust backend only; loading it through transformers imports torch and
    costs seconds of start-up per process. This exposes what the stage uses — the backend, BOS/EOS/PAD
    ids, the vocabulary for the fingerprint — with the same values transformers would give (tests
    compare the fingerprints).
    """

    def __init__(self, backend: Any, name_or_path: str, specials: dict[str, int | None]):
        self.backend_tokenizer = backend
        self.name_or_path = name_or_path
        self.bos_token_id = specials.get("bos")
        self.eos_token_id = specials.get("eos")
        self.pad_token_id = specials.get("pad")

    def get_vocab(self) -> dict[str, int]:
        vocab: dict[str, int] = self.backend_tokenizer.get_vocab(with_added_tokens=True)
        return vocab

    def __len__(self) -> int:
        return int(self.backend_tokenizer.get_vocab_size(with_added_tokens=True))

    def encode_ids(self, text: str) -> list[int]:
        """``text``'s ids with the tokenizer's own special tokens (as ``tokenizer(text)`` gives them)."""
        ids: list[int] = self.backend_tokenizer.encode(text, add_special_tokens=True).ids
        return ids

    @classmethod
    def from_hf(cls, tok: Any) -> BackendTokenizer:
        ids = {"bos": tok.bos_token_id, "eos": tok.eos_token_id, "pad": tok.pad_token_id}
        return cls(tok.backend_tokenizer, tok.name_or_path, ids)


def _special_token(config: dict[str, Any], key: str) -> str | None:
    value = config.get(key)
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _load_backend(path: str) -> BackendTokenizer | None:
    """The backend straight from ``tokenizer.json``; None where only transformers can load the directory."""
    from pathlib import Path

    root = Path(path)
    if not (root / "tokenizer.json").is_file() or not (root / "tokenizer_config.json").is_file():
        return None
    from tokenizers import Tokenizer

    config = json.loads((root / "tokenizer_config.json").read_text(encoding="utf-8"))
    specials_map = root / "special_tokens_map.json"
    if specials_map.is_file():
        config = {**json.loads(specials_map.read_text(encoding="utf-8")), **config}
    if config.get("tokenizer_class") not in (None, "LlamaTokenizer", "LlamaTokenizerFast", "PreTrainedTokenizerFast",
                                             "GPT2Tokenizer", "GPT2TokenizerFast"):
        return None  # a class that may add behaviour beyond its tokenizer.json
    backend = Tokenizer.from_file(str(root / "tokenizer.json"))
    vocab = backend.get_vocab(with_added_tokens=True)
    for tid, added in (config.get("added_tokens_decoder") or {}).items():
        if vocab.get(added.get("content")) != int(tid):
            return None  # transformers would add tokens the backend lacks
    ids: dict[str, int | None] = {}
    for key in ("bos", "eos", "pad"):
        token = _special_token(config, f"{key}_token")
        ids[key] = backend.token_to_id(token) if token is not None else None
    return BackendTokenizer(backend, path, ids)


def load_tokenizer(name_or_path: str, *, backend_only: bool = False, fast_only: bool = True) -> Any:
    """Load a Hugging Face tokenizer by local path, hub id or ``mistral-v1``; one-line error on failure.

    The one loader of every stage. Conversion and training need the fast (Rust) implementation
    (``fast_only``, the default): they tokenize in bulk and fingerprint the vocabulary. The synthesis
    engines only count and encode prompts, so they accept a slow one (``fast_only=False``).
    ``backend_only`` returns a :class:`BackendTokenizer` (read from ``tokenizer.json`` without
    transformers where the directory allows it), for stages that only tokenize.
    """
    path = resolve_tokenizer_path(name_or_path)
    if backend_only:
        try:
            light = _load_backend(path)
        except Exception as e:  # malformed tokenizer files: the library's first line is the message
            log_first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"cannot load tokenizer {name_or_path!r}: {log_first}") from None
        if light is not None:
            return light
        return BackendTokenizer.from_hf(load_tokenizer(name_or_path))
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path, use_fast=True)
    except Exception as e:  # transformers raises OSError, ValueError, EnvironmentError, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load tokenizer {name_or_path!r}: {first}") from None
    if fast_only and not getattr(tok, "is_fast", False):
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
