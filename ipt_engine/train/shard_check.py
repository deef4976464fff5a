"""What a shard directory says about itself, and whether the model may train on it.

``ipt convert`` writes ``ipt.json`` beside ``index.json``; its tokenizer fingerprint must match the
model's tokenizer, because token ids from another vocabulary train a model on garbage without any error.
Directories written by llm-foundry's converter have no ``ipt.json``: they are accepted, their documents
are found by splitting at EOS, and the row length must then come from the config. The file's fields:
docs/ARCHITECTURE.md, "ipt.json".
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ipt_engine.errors import UserError

log = logging.getLogger(__name__)

IPT_META = "ipt.json"


@dataclass(frozen=True)
class ShardInfo:
    """The facts about one stream that training uses."""

    where: str
    meta: dict[str, Any] | None
    """``ipt.json`` contents, or None for shards from another converter."""

    @property
    def max_seq_len(self) -> int | None:
        return None if self.meta is None else int(self.meta["max_seq_len"])


def _fetch_meta(local: str | None, remote: str | None, timeout: float) -> tuple[str, dict[str, Any] | None]:
    """Read ``ipt.json`` from ``local``, downloading it from ``remote`` first when it is not there yet."""
    where = local or remote or "?"
    if local is not None and (Path(local) / IPT_META).is_file():
        path = Path(local) / IPT_META
    elif remote is not None and local is not None:
        from streaming.base.storage import download_file

        path = Path(local) / IPT_META
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            download_file(f"{remote.rstrip('/')}/{IPT_META}", str(path), timeout)
        except Exception:  # absent remotely: shards from another converter
            return where, None
    else:
        return where, None
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: unreadable ({e})") from None
    if meta.get("format") != "ipt-mds":
        raise UserError(f"{path}: not an ipt-mds description (format={meta.get('format')!r})")
    if int(meta.get("version", 0)) > 1:
        raise UserError(f"{path}: written by a newer ipt-engine (version {meta['version']}); upgrade to read it")
    return str(path.parent), meta


def inspect_stream(
    local: str | None, remote: str | None, tokenizer_fp: dict[str, Any], *, key: str, timeout: float = 60.0
) -> ShardInfo:
    """Load a stream's ``ipt.json`` and check its tokenizer against the model's (``key`` names it in errors)."""
    from ipt_engine.data.tokenizer_info import same_vocabulary

    where, meta = _fetch_meta(local, remote, timeout)
    if meta is None:
        log.warning("%s: no %s (not written by `ipt convert`); documents are split at EOS id %s and the "
                    "tokenizer cannot be checked", where, IPT_META, tokenizer_fp.get("eos_id"))
        return ShardInfo(where, None)
    shard_tok = meta.get("tokenizer") or {}
    if not same_vocabulary(shard_tok, tokenizer_fp):
        raise UserError(
            f"{key}: shards in {where} were tokenized with {shard_tok.get('name')!r} "
            f"(vocab {shard_tok.get('vocab_size')}, hash {shard_tok.get('vocab_hash')}) but the model's tokenizer is "
            f"{tokenizer_fp.get('name')!r} (vocab {tokenizer_fp.get('vocab_size')}, hash {tokenizer_fp.get('vocab_hash')}); "
            "reconvert with the model's tokenizer or set tokenizer.name"
        )
    for special in ("bos_id", "eos_id"):
        if shard_tok.get(special) != tokenizer_fp.get(special):
            raise UserError(
                f"{key}: shards in {where} use {special} {shard_tok.get(special)} but the tokenizer uses "
                f"{tokenizer_fp.get(special)}"
            )
    return ShardInfo(where, meta)


def resolve_seq_len(configured: int | None, infos: dict[str, ShardInfo], key: str) -> int:
    """Row length N: the configured one, else the longest the shards hold; shards may not exceed it."""
    lens = {name: info.max_seq_len for name, info in infos.items() if info.max_seq_len is not None}
    if configured is None:
        if not lens:
            raise UserError(f"{key}.max_seq_len: required for shards without {IPT_META} (llm-foundry shards)")
        return max(lens.values())
    for name, n in lens.items():
        if n > configured:
            raise UserError(
                f"{key}.max_seq_len: {configured} is shorter than the samples of stream {name!r} ({n} tokens); "
                "raise it or reconvert the shards"
            )
    return configured
