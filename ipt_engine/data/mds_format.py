"""The MDS shard format, encoded without importing ``streaming``.

``import streaming`` costs 5–9 s on a 2-core machine (its package ``__init__`` pulls in torch and
transformers through the dataset, text and multimodal modules), which is more than converting a
10 MB corpus takes. Conversion needs only the byte layout, so it is written here, and the stock
``StreamingDataset`` reads what we write (tests compare our shard bytes and ``index.json`` entries
with the stock ``MDSWriter``'s for the same samples, and read our shards back with the stock reader).

Layout of one shard (``format: mds``, index ``version: 2``)::

    uint32 num_samples | uint32 offsets[num_samples + 1] | config JSON | sample 0 | sample 1 | ...

where the offsets are absolute byte positions of each sample, the config JSON is the writer's
configuration (the same object the index entry carries), and a sample is ``uint32 size`` for each
variable-size column (in sorted column order), then each column's bytes. An ``ndarray:<dtype>``
column (dynamic shape) is ``uint8 (ndim << 2 | shape dtype code)``, the shape in the smallest
unsigned dtype that holds it, then the raw values.
"""

from __future__ import annotations

import bz2
import gzip
import json
from collections.abc import Callable
from typing import Any

import numpy as np

# Value dtypes and their codes in the ndarray encoding; shape dtypes by code.
_SHAPE_DTYPES = ("uint8", "uint16", "uint32", "uint64")
_VALUE_DTYPES = {"uint8", "int8", "uint16", "int16", "float16", "uint32", "int32", "float32", "uint64", "int64",
                 "float64"}

# codec family -> (default level, levels, compress(data, level)); extensions equal the family names.
_CODECS: dict[str, tuple[int | None, range | None, Callable[[bytes, int | None], bytes]]] = {
    "zstd": (3, range(1, 23), lambda data, level: _zstd().compress(data, level)),
    "gz": (9, range(10), lambda data, level: gzip.compress(data, 9 if level is None else level)),
    "bz2": (9, range(1, 10), lambda data, level: bz2.compress(data, 9 if level is None else level)),
    "br": (11, range(12), lambda data, level: _brotli().compress(data, quality=level)),
    "snappy": (None, None, lambda data, level: _snappy().compress(data)),
}


def _zstd() -> Any:
    import zstd

    return zstd


def _brotli() -> Any:
    import brotli

    return brotli


def _snappy() -> Any:
    import snappy

    return snappy


def parse_compression(algo: str | None) -> tuple[str, int | None] | None:
    """``"zstd"`` / ``"zstd:7"`` → (family, level); ``None`` for no compression; ValueError if unknown.

    Accepts exactly the names Streaming accepts, so an index we write names a codec its reader knows.
    """
    if not algo:
        return None
    family, _, level_text = algo.partition(":")
    if family not in _CODECS:
        raise ValueError(f"unknown compression {algo!r}; choose from {', '.join(sorted(_CODECS))} (optionally :level)")
    default, levels, _ = _CODECS[family]
    if not level_text:
        return family, default
    if levels is None or not level_text.isdigit() or int(level_text) not in levels:
        raise ValueError(f"compression {algo!r}: {family} takes no such level")
    return family, int(level_text)


def is_compression(algo: str | None) -> bool:
    try:
        return parse_compression(algo) is not None
    except ValueError:
        return False


def compress(algo: str, data: bytes) -> bytes:
    parsed = parse_compression(algo)
    assert parsed is not None
    family, level = parsed
    return _CODECS[family][2](data, level)


def compression_extension(algo: str) -> str:
    parsed = parse_compression(algo)
    assert parsed is not None
    return parsed[0]


class ColumnEncoding:
    """One column's MDS encoding: only the ``ndarray`` family, which is what token shards use."""

    def __init__(self, name: str, encoding: str):
        kind, *args = encoding.split(":")
        if kind != "ndarray" or not args or args[0] not in _VALUE_DTYPES or len(args) > 2:
            raise ValueError(f"column {name!r}: encoding {encoding!r} is not supported here "
                             f"(use ndarray:<dtype> or ndarray:<dtype>:<shape>)")
        self.name = name
        self.encoding = encoding
        self.dtype = np.dtype(args[0])
        self.shape = tuple(int(x) for x in args[1].split(",")) if len(args) == 2 else None
        self.size = int(np.prod(self.shape)) * self.dtype.itemsize if self.shape else None

    def encode(self, value: Any) -> bytes:
        arr = np.asarray(value)
        if arr.dtype != self.dtype:
            raise ValueError(f"column {self.name!r}: expected dtype {self.dtype.name}, got {arr.dtype.name}")
        if arr.size == 0:
            raise ValueError(f"column {self.name!r}: an ndarray column cannot hold an empty array")
        if self.shape is not None:
            if arr.shape != self.shape:
                raise ValueError(f"column {self.name!r}: expected shape {self.shape}, got {arr.shape}")
            return arr.tobytes()
        if arr.ndim >= 64 or min(arr.shape) <= 0:
            raise ValueError(f"column {self.name!r}: shape {arr.shape} cannot be encoded")
        biggest = max(arr.shape)
        code = next(i for i, bits in enumerate((8, 16, 32, 64)) if biggest < (1 << bits))
        head = bytes([(arr.ndim << 2) | code]) + np.asarray(arr.shape, dtype=_SHAPE_DTYPES[code]).tobytes()
        return head + arr.tobytes()


class MDSShardEncoder:
    """Encodes samples and whole shards byte-for-byte as Streaming's ``MDSWriter`` does."""

    format = "mds"
    extra_bytes_per_sample = 4  # the sample's offset entry

    def __init__(self, columns: dict[str, str], compression: str | None, size_limit: int | None):
        parse_compression(compression)
        self.columns = [ColumnEncoding(name, columns[name]) for name in sorted(columns)]
        self.compression = compression or None
        self.size_limit = size_limit or None
        self.config = {
            "version": 2,
            "format": self.format,
            "compression": self.compression,
            "hashes": [],
            "size_limit": self.size_limit,
            "column_names": [c.name for c in self.columns],
            "column_encodings": [c.encoding for c in self.columns],
            "column_sizes": [c.size for c in self.columns],
        }
        self.config_bytes = json.dumps(self.config, sort_keys=True).encode("utf-8")
        self.extra_bytes_per_shard = 4 + 4 + len(self.config_bytes)

    def encode_sample(self, sample: dict[str, Any]) -> bytes:
        sizes, parts = [], []
        for col in self.columns:
            data = col.encode(sample[col.name])
            if col.size is None:
                sizes.append(len(data))
            parts.append(data)
        return np.asarray(sizes, dtype=np.uint32).tobytes() + b"".join(parts)

    def encode_shard(self, samples: list[bytes]) -> bytes:
        head = np.uint32(len(samples)).tobytes()
        offsets = np.cumsum([0, *map(len, samples)], dtype=np.int64)
        offsets += len(head) + 4 * (len(samples) + 1) + len(self.config_bytes)
        if offsets[-1] >= 1 << 32:
            raise ValueError("shard exceeds 4 GiB; lower the shard size limit")
        return head + offsets.astype(np.uint32).tobytes() + self.config_bytes + b"".join(samples)

    def shard_names(self, index: int) -> tuple[str, str | None]:
        raw = f"shard.{index:05}.{self.format}"
        return raw, (f"{raw}.{compression_extension(self.compression)}" if self.compression else None)

    def index_entry(self, n_samples: int, raw: tuple[str, int], zipped: tuple[str, int] | None) -> dict[str, Any]:
        """The shard's entry in ``index.json``: sample count, file names and sizes, and the config."""
        entry: dict[str, Any] = {
            "samples": n_samples,
            "raw_data": {"basename": raw[0], "bytes": raw[1], "hashes": {}},
            "zip_data": {"basename": zipped[0], "bytes": zipped[1], "hashes": {}} if zipped else None,
        }
        entry.update(self.config)
        return entry
