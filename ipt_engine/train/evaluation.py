"""Held-out evaluation during training: one Composer ``Evaluator`` per ``eval.streams`` entry.

Each stream gets its own loader (unshuffled, every row, the last partial batch kept) and its own
evaluator labelled with the stream's name, so the console and every logger report
``metrics/<name>/LanguageCrossEntropy`` and ``.../LanguagePerplexity`` per stream — raw and augmented
held-out text apart, not averaged into one number. Batches go through the same collator and packed
forward as training: document masking, positions restarting per document, no label across a document
boundary. The model's evaluation forward drops the labels and returns logits, and the metric averages
the cross-entropy over every predicted token of the stream (summed over ranks), which is the
token-weighted mean of the per-document losses.
"""

from __future__ import annotations

from typing import Any

from ipt_engine.train.config import EvalConfig, LoaderConfig, StreamConfig

METRICS = ["LanguageCrossEntropy", "LanguagePerplexity"]


def stream_loader_config(cfg: EvalConfig, name: str) -> LoaderConfig:
    """The loader settings of one evaluation stream: read whole and in order."""
    stream = cfg.streams[name]
    assert isinstance(stream, StreamConfig)  # EvalConfig's validator turned every path into a StreamConfig
    return LoaderConfig(streams={name: stream}, max_seq_len=cfg.max_seq_len, shuffle=False,
                        num_workers=cfg.num_workers, persistent_workers=False, pin_memory=False, drop_last=False)


def build_stream_evaluators(cfg: EvalConfig, *, tokenizer_fp: dict[str, Any], device_batch_size: int,
                            loader_args: dict[str, Any], num_tokens: Any) -> list[Any]:
    """The evaluators of ``cfg``, in the order the streams are listed.

    ``loader_args`` are :func:`ipt_engine.train.data.build_dataloader`'s keyword arguments besides the
    plan and batch size (seed, ids, vocabulary size); ``num_tokens`` counts a batch's tokens for
    Composer (the training ``DataSpec``'s function).
    """
    from composer import DataSpec, Evaluator

    from ipt_engine.train.data import build_dataloader, plan_loader

    out = []
    for name in cfg.streams:
        plan = plan_loader(stream_loader_config(cfg, name), "eval", tokenizer_fp)
        dl = build_dataloader(plan, device_batch_size=cfg.device_batch_size or device_batch_size, **loader_args)
        out.append(Evaluator(label=name, dataloader=DataSpec(dl, get_num_tokens_in_batch=num_tokens),
                             metric_names=list(METRICS), eval_interval=cfg.interval,
                             subset_num_batches=cfg.subset_num_batches))
    return out
