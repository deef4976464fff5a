"""The conversion config: what decides an ``ipt convert`` output besides its inputs.

These are the settings ``--resume`` refuses to change (with the tokenizer's fingerprint in their place of
its name) and what ``ipt convert --print-config`` shows. They come from ``--config FILE``, the flags
(``--max-seq-len 4096``) and ``--set key=value``, all through :func:`ipt_engine.configuration.load`, so
a bad value is one line naming the flag or key: ``--max-seq-len: must be >= 2, got 1``. How a run goes
(``--workers``, ``--on-error``, ``--resume``, ``--ray``...) changes nothing in the output and is not
part of it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from ipt_engine.configuration import Invalid, Section

#: The flag each config key also has, for error lines that name what the user typed.
FLAGS = {
    "tokenizer": "--tokenizer",
    "max_seq_len": "--max-seq-len",
    "packing": "--packing",
    "compression": "--compression",
    "text_field": "--text-field",
    "shard_size": "--shard-size",
    "bfd_window": "--bfd-window",
}


class ConvertConfig(Section):
    """What ``ipt convert`` writes: tokenizer, row length, packing and shard layout (``--config``, the flags
    and ``--set key=value`` set it; ``--resume`` refuses a change)."""

    tokenizer: str = "mistral-v1"
    """HF tokenizer directory or hub id; ``mistral-v1`` is the synthesizer's own, built offline."""
    max_seq_len: Annotated[int, Field(ge=2)] = 2048
    """N, tokens per sample (row); at least 2: BOS/EOS plus a token."""
    packing: Literal["concat", "bfd"] = "concat"
    """``concat``: join documents and cut every N tokens; ``bfd``: best-fit decreasing, never splits a
    document of at most N tokens."""
    compression: str | None = "zstd"
    """Shard compression, a Streaming codec (``zstd``, ``zstd:7``, ``gz``...); ``none`` or null: raw."""
    text_field: str = "text"
    """Field holding the text in JSONL, Parquet and ``datasets`` records."""
    shard_size: Annotated[int, Field(ge=1 << 10, lt=1 << 32)] = 1 << 26
    """Uncompressed bytes per shard: 64 MiB (docs/ARCHITECTURE.md, "MDS shards"); 1 KiB to 4 GiB."""
    bfd_window: Annotated[int, Field(ge=1)] = 1024
    """``bfd``: documents are packed in windows of this many samples' worth of tokens."""

    @field_validator("compression", mode="before")
    @classmethod
    def _codec(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("", "none"):
            return None
        if isinstance(value, str):
            from ipt_engine.data.mds_format import is_compression

            if not is_compression(value):
                raise Invalid(f"must be a Streaming codec (e.g. zstd, zstd:7, gz, none), got {value!r}")
        return value
