"""``ipt``: one subcommand per stage.

Each subcommand lives in ``ipt_engine.commands.<name>`` with ``add_arguments(parser)`` and
``run(args) -> int``; those modules import only the standard library at top level, so ``ipt --help``
answers instantly. A stage with a typed config names its model in ``CONFIG_MODEL`` (``"module:Class"``)
and builds it in ``resolve_config(args)``; it then gets ``--print-config`` (the resolved config as YAML)
and ``--schema`` (every field with its description). A :class:`~ipt_engine.errors.UserError` anywhere
becomes one line on stderr and exit status 2; a bug still shows its traceback.
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
    "eval": "evaluate a trained model on lm-evaluation-harness tasks (offline held-out tasks shipped); compare runs",
    "pipeline": "run the whole pipeline on the embedded default corpus (the README's main job)",
    "bench": "run the benchmark suites (baseline vs ours) and regenerate benchmarks/results/SUMMARY.md",
}


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


class _SchemaAction(argparse.Action):
    """``--schema``: like ``--help``, print and exit before required arguments are checked."""

    def __init__(self, option_strings: list[str], dest: str, model: str = "", **kwargs: object) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0,
                         help="list every config field with its type, default and description, then exit")
        self.model = model

    def __call__(self, parser: argparse.ArgumentParser, namespace: object, values: object,
                 option_string: str | None = None) -> None:
        from ipt_engine.configuration import resolve_model, schema_text

        sys.stdout.write(schema_text(resolve_model(self.model)))
        parser.exit(0)


def _add_config_flags(p: argparse.ArgumentParser, model: str, relax: bool) -> None:
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (file, flags and overrides applied) as YAML, then exit")
    p.add_argument("--schema", action=_SchemaAction, model=model)
    if relax:  # --print-config needs only what the config is made of, not the inputs and outputs
        for action in p._actions:
            action.required = False


def build_parser(relax: bool = False) -> argparse.ArgumentParser:
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
        if getattr(module, "CONFIG_MODEL", None):
            _add_config_flags(p, module.CONFIG_MODEL, relax)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(relax="--print-config" in argv)
    args = parser.parse_args(argv)
    try:
        if getattr(args, "print_config", False):
            from ipt_engine.configuration import dump_yaml

            sys.stdout.write(dump_yaml(args._module.resolve_config(args)))
            return 0
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
