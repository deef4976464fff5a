"""Evaluation: offline lm-evaluation-harness tasks built from held-out data, ``ipt eval`` and comparisons."""
