"""The compact console lines ``ipt train`` prints, against hand-written expected lines."""

from __future__ import annotations

from ipt_engine.train.console import format_eval_line, format_train_line


def test_train_line_shows_the_watched_fields_in_order():
    metrics = {"time/batch": 10.0, "loss/train/total": 5.23144, "lr-DecoupledAdamW/group0": 0.0029,
               "throughput/tokens_per_sec": 12345.6, "throughput/device/mfu": 0.0123}
    assert format_train_line(10, 30, metrics) == "[batch 10/30]  loss 5.2314  lr 2.90e-03  tok/s 12,346  mfu 1.2%"


def test_train_line_without_a_batch_limit_or_optional_fields():
    assert format_train_line(7, None, {"loss/train/total": 1.0}) == "[batch 7]  loss 1.0000"


def test_eval_line_one_entry_per_evaluator():
    metrics = {"metrics/raw/LanguageCrossEntropy": 5.12345, "metrics/raw/LanguagePerplexity": 168.07,
               "metrics/augmented/LanguageCrossEntropy": 4.5, "metrics/augmented/LanguagePerplexity": 90.017,
               "time/batch": 3}
    assert format_eval_line(12, metrics) == (
        "[eval @ batch 12] augmented: loss 4.5000 ppl 90.0  raw: loss 5.1235 ppl 168.1"
    )
