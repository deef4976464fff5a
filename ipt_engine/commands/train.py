"""Pre-train a causal LM on packed MDS shards with Composer, from a YAML config.

  ipt train examples/tiny-cpu.yaml
  ipt train examples/tiny-cpu.yaml max_duration=20ba train_loader.streams.raw.local=/data/raw
  composer -n 8 -m ipt_engine.train examples/llama-1b-8xh100.yaml      # the same code, one process per GPU

Overrides are dotted key=value pairs; values are parsed as YAML (null, numbers, true/false, [lists]).
The config is checked before anything starts: an unknown key, a wrong type, a missing shard directory,
shards tokenized with another tokenizer or a batch size that does not divide all fail with one line.
With a save_folder the final model is also exported in Hugging Face format (<save_folder>/huggingface).
"""

from __future__ import annotations

import argparse
from typing import Any

CONFIG_MODEL = "ipt_engine.train.config:TrainConfig"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG.yaml", help="training config (see examples/)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    parser.add_argument("--verbose", action="store_true",
                        help="print every metric of every batch (Composer's console logger) instead of one line "
                             "per console_log_interval; the same as loggers.console=full")


def _overrides(args: argparse.Namespace) -> list[str]:
    return [*args.overrides, *(["loggers.console=full"] if getattr(args, "verbose", False) else [])]


def resolve_config(args: argparse.Namespace) -> Any:
    """The config ``run`` would train with (``--print-config``)."""
    from ipt_engine.errors import UserError
    from ipt_engine.train.config import load_config

    if args.config is None:
        raise UserError("CONFIG.yaml: required (the training config to resolve)")
    return load_config(args.config, _overrides(args))


def run(args: argparse.Namespace) -> int:
    from ipt_engine.train.main import main

    return main([args.config, *_overrides(args)])
