"""``ipt``: one subcommand per stage.

Each subcommand lives in ``ipt_engine.commands.<name>`` with ``add_arguments(parser)`` and
``run(args) -> int``; those modules import only the standard library at top level, so ``ipt --help``
answers instantly. A :class:`~ipt_engine.errors.UserError` anywhere becomes one line on stderr and exit
status 2; a bug still shows its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from ipt_engine import __version__
from ipt_engine.errors import UserError

COMMANDS: dict[str, str] = {
    "synthesize": "generate instruction-response pairs for raw texts with the instruction synthesizer (vLLM)",
    "templify": "render read collections into instruction-augmented pre-training texts",
    "convert": "tokenize and pack texts into MosaicML Streaming (MDS) shards",
    "inspect": "summarize MDS shards written by `ipt convert`: samples, tokens, documents, fill rate",
    "train": "pre-train a causal LM on packed shards with Composer, from a YAML config",
    "assets": "materialize offline assets: the synthesizer's tokenizer and tiny random-weight models",
    "pipeline": "run the whole pipeline on the embedded default corpus (the README's main job)",
}


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipt",
        description="Instruction Pre-Training engine: synthesize -> templify -> convert -> train.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"ipt-engine {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, summary in COMMANDS.items():
        if importlib.util.find_spec(f"ipt_engine.commands.{name}") is None:
            continue  # a stage whose module is not part of this build
        module = importlib.import_module(f"ipt_engine.commands.{name}")
        p = sub.add_parser(
            name, help=summary, description=module.__doc__ or summary, formatter_class=_Formatter
        )
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except UserError as e:
        print(f"ipt {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `ipt inspect DIR | head`: the reader left, nothing to report
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"ipt {args.command}: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
