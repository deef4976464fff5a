"""Streaming data loaders over MDS shards, mixing streams by proportion.

Every sample leaves the dataset as ``{"tokens": int64[L], "doc_lens": int64[k]}`` whatever wrote it:

- ``ipt convert`` shards: ``tokens`` + ``doc_lens`` columns, used as they are;
- llm-foundry shards: a ``tokens`` ndarray column, or the older ``bytes`` column of raw int64 (or int32)
  ids; their documents are recovered by splitting at EOS.

Deterministic mid-epoch resumption is Streaming's: Composer checkpoints the dataset's ``state_dict`` and
the sample order depends only on the seed, ``num_canonical_nodes`` and the per-device batch size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ipt_engine.errors import UserError
from ipt_engine.train.collator import PackedCollator, split_at_eos
from ipt_engine.train.config import LoaderConfig
from ipt_engine.train.shard_check import ShardInfo, inspect_stream, resolve_seq_len


def decode_legacy_bytes(raw: bytes, vocab_size: int) -> np.ndarray:
    """Token ids from llm-foundry's old ``bytes`` column, whose dtype the shards do not record.

    int64 was that converter's default. Read as int64, int32 data pairs up two ids into one huge value,
    so an id outside the vocabulary means the data was int32.
    """
    if len(raw) % 8 == 0:
        ids = np.frombuffer(raw, dtype=np.int64)
        if ids.size == 0 or (ids.min() >= 0 and ids.max() < vocab_size):
            return ids
    if len(raw) % 4:
        raise ValueError(f"a `bytes` sample of {len(raw)} bytes is neither int64 nor int32 token ids")
    return np.frombuffer(raw, dtype=np.int32).astype(np.int64)


def normalize_sample(sample: dict[str, Any], eos_id: int, vocab_size: int) -> dict[str, np.ndarray]:
    """One sample of any supported shard layout as ``tokens`` + ``doc_lens``."""
    if "tokens" in sample:
        tokens = np.asarray(sample["tokens"], dtype=np.int64)
    elif "bytes" in sample:
        tokens = decode_legacy_bytes(sample["bytes"], vocab_size)
    else:
        raise ValueError(f"MDS sample has neither a `tokens` nor a `bytes` column (columns: {sorted(sample)})")
    doc_lens = sample.get("doc_lens")
    if doc_lens is None:
        doc_lens = split_at_eos(tokens, eos_id)
    return {"tokens": tokens, "doc_lens": np.asarray(doc_lens, dtype=np.int64)}


def _packed_dataset_class() -> type:
    from streaming import StreamingDataset

    class PackedStreamingDataset(StreamingDataset):
        """A StreamingDataset whose samples come out in the one layout the collator reads."""

        def __init__(self, *, eos_id: int, vocab_size: int, **kwargs: Any):
            super().__init__(**kwargs)
            self.eos_id = eos_id
            self.vocab_size = vocab_size

        def get_item(self, sample_id: int, retry: int = 7) -> dict[str, np.ndarray]:
            return normalize_sample(super().get_item(sample_id, retry), self.eos_id, self.vocab_size)

    return PackedStreamingDataset


@dataclass
class LoaderPlan:
    """What the config and the shards decided about a loader, before any dataset exists."""

    key: str
    cfg: LoaderConfig
    seq_len: int
    infos: dict[str, ShardInfo]


def plan_loader(cfg: LoaderConfig, key: str, tokenizer_fp: dict[str, Any]) -> LoaderPlan:
    """Check every stream's shards against the tokenizer and settle the row length."""
    infos = {
        name: inspect_stream(st.local, st.remote, tokenizer_fp, key=f"{key}.streams.{name}", timeout=cfg.download_timeout)
        for name, st in cfg.streams.items()
    }
    return LoaderPlan(key, cfg, resolve_seq_len(cfg.max_seq_len, infos, key), infos)


def build_dataloader(plan: LoaderPlan, *, device_batch_size: int, seed: int, eos_id: int, pad_id: int,
                     vocab_size: int) -> Any:
    """A torch DataLoader over a :class:`PackedStreamingDataset` with the packed collator."""
    from streaming import Stream
    from torch.utils.data import DataLoader

    cfg = plan.cfg
    streams = [
        Stream(remote=st.remote, local=st.local, proportion=st.proportion, repeat=st.repeat,
               download_timeout=cfg.download_timeout)
        for st in cfg.streams.values()
    ]
    try:
        dataset = _packed_dataset_class()(
            eos_id=eos_id,
            vocab_size=vocab_size,
            streams=streams,
            batch_size=device_batch_size,
            shuffle=cfg.shuffle,
            shuffle_seed=cfg.shuffle_seed if cfg.shuffle_seed is not None else seed,
            shuffle_algo=cfg.shuffle_algo,
            num_canonical_nodes=cfg.num_canonical_nodes,
            predownload=cfg.predownload,
            cache_limit=cfg.cache_limit,
            download_timeout=cfg.download_timeout,
        )
    except (FileNotFoundError, ValueError) as e:
        raise UserError(f"{plan.key}.streams: {str(e).strip().splitlines()[0]}") from None
    workers = cfg.num_workers
    return DataLoader(
        dataset,
        batch_size=device_batch_size,
        collate_fn=PackedCollator(plan.seq_len, pad_id),
        num_workers=workers,
        pin_memory=cfg.pin_memory,
        drop_last=cfg.drop_last,
        prefetch_factor=cfg.prefetch_factor if workers > 0 else None,
        persistent_workers=cfg.persistent_workers and workers > 0,
    )
