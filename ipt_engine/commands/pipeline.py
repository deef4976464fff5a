"""Run the whole pipeline on the embedded default corpus (the Python standard library's documentation,
present on every machine) — the README's main job:

  1. write the corpus                      out/demo/corpus/raw.jsonl
  2. convert it to packed shards           out/demo/shards/raw      (--holdout: out/demo/shards/raw-holdout)
  3. synthesize instruction-response pairs out/demo/synth          (synth env, vLLM; tiny format model)
  4. templify them into pre-training texts out/demo/templified     (held-out entries: templified-holdout)
  5. convert those to packed shards        out/demo/shards/augmented (and augmented-holdout)
  6. train a tiny Llama on both, mixed     out/demo/train          (examples/tiny-cpu.yaml; model: out/demo/model)
  7. evaluate it on the held-out tasks     out/demo/eval           (`ipt eval`, data in out/demo/eval-data)

and print the `ipt inspect` summaries, then one table of every step: items in -> out, seconds, output
path (plots included). --holdout carves a fraction of the documents out of training by the hash of their
text (`ipt convert --split`), and the synthesized entries of those documents with them; training
reports the held-out loss of both streams, and the held-out read collections and texts become the
offline evaluation tasks. --compare instead trains two models from the same initialization for the same
number of tokens — raw only, and raw + augmented as tiny-cpu.yaml mixes them — evaluates both and
writes out/demo/compare/comparison.md and loss-curves.png. Every step resumes: a rerun skips what is complete. The stages run in this process, except synthesis:
it runs in the synthesis environment (.venv-synth beside this one, or $IPT_SYNTH_PYTHON), because vLLM
and Composer cannot share one, crossed once with a job file (python -m ipt_engine.synth.job); without
that environment, steps 3-6 are skipped with a note. The synthesizer here is a tiny model
fine-tuned on CPU to write the synthesizer's format (built once, cached); pass --model to use the real
instruction-pretrain/instruction-synthesizer on a GPU machine.

example:
  ipt pipeline --workdir out/demo --synth-limit 32 --train-steps 12
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default="out/demo", help="where every stage writes its output")
    p.add_argument("--max-seq-len", type=int, default=2048, help="tokens per packed sample")
    p.add_argument("--packing", choices=("concat", "bfd"), default="bfd", help="packing policy")
    p.add_argument("--workers", type=int, default=2, help="tokenizer worker processes")
    p.add_argument("--limit", type=int, default=None, help="use only the first N documents of the corpus")
    p.add_argument("--synth-limit", type=int, default=32, help="texts to synthesize pairs for")
    p.add_argument("--rounds", type=int, default=2, help="M-shot rounds of synthesis")
    p.add_argument("--model", default=None,
                   help="synthesizer model (default: the tiny format-writing model built on CPU)")
    p.add_argument("--train-steps", type=int, default=12, help="training batches (0: skip training)")
    p.add_argument("--skip-synth", action="store_true", help="stop after the raw shards")
    p.add_argument("--plot", action="store_true", help="also draw the document-length histograms")
    p.add_argument("--holdout", type=float, default=0.1,
                   help="fraction of documents held out of training by text hash, for evaluation (0: none)")
    p.add_argument("--compare", action="store_true",
                   help="train raw-only and raw+augmented from the same init on the same token budget, "
                        "evaluate both, write compare/comparison.md and compare/loss-curves.png")
    p.add_argument("--eval-tasks", default="ipt_heldout_qa,ipt_heldout_gen,ipt_heldout_ppl",
                   help="tasks `ipt eval` runs on the trained model(s) (empty: none)")


def synth_python() -> Path | None:
    """The synthesis environment's interpreter: $IPT_SYNTH_PYTHON, else ``.venv-synth`` beside the
    environment running this (the set-up script makes both side by side), else in the working directory."""
    explicit = os.environ.get("IPT_SYNTH_PYTHON")
    if explicit:
        return Path(explicit)
    for root in (Path(sys.prefix).parent, Path.cwd()):
        candidate = root / ".venv-synth" / "bin" / "python"
        if candidate.exists():
            return candidate
    return None


def run_synth_job(py: Path, job: dict[str, Any], job_file: Path) -> dict[str, Any]:
    """Write ``job`` (a :class:`ipt_engine.synth.job.SynthJob`) to ``job_file`` and run it in the
    synthesis environment; its progress streams to stderr, its result comes back as JSON."""
    import json

    import yaml

    from ipt_engine.errors import UserError

    job_file.parent.mkdir(parents=True, exist_ok=True)
    job_file.write_text(yaml.safe_dump(job, sort_keys=False))
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
           "VLLM_ENABLE_V1_MULTIPROCESSING": os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0")}
    proc = subprocess.run([str(py), "-m", "ipt_engine.synth.job", str(job_file)], stdout=subprocess.PIPE,
                          stderr=sys.stderr, text=True, env=env)
    if proc.returncode != 0:
        raise UserError(f"synthesis job {job_file} failed in {py} (exit {proc.returncode})")
    done: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return done


def run(args: argparse.Namespace) -> int:
    from ipt_engine.commands.convert import print_result
    from ipt_engine.configuration import load
    from ipt_engine.corpus import write_default_corpus
    from ipt_engine.data.convert import ConvertOptions, convert
    from ipt_engine.data.convert_config import ConvertConfig
    from ipt_engine.data.inspect import inspect_shards, plot_histogram, print_report
    from ipt_engine.data.split import split_sides
    from ipt_engine.errors import UserError
    from ipt_engine.examples import example_path
    from ipt_engine.pipeline_report import Count, PipelineReport

    work = Path(args.workdir)
    table = PipelineReport(f"ipt pipeline {work}")
    steps = 2 if args.skip_synth else 6
    corpus = work / "corpus" / "raw.jsonl"
    with table.step("corpus", corpus) as row:
        if not corpus.exists():
            _, n = write_default_corpus(corpus, limit=args.limit)
            print(f"[1/{steps}] default corpus: {n} standard-library modules' documentation -> {corpus}")
        else:
            print(f"[1/{steps}] default corpus: reusing {corpus}")
            row.reused = True
            with open(corpus, "rb") as f:
                n = sum(1 for _ in f)
        row.items_out = Count(n, "docs")

    config = load(ConvertConfig, data={"tokenizer": "mistral-v1", "max_seq_len": args.max_seq_len,
                                       "packing": args.packing})

    def convert_into(src: Path, out: Path, split: str | None = None) -> None:
        opts = ConvertOptions.from_config(config, inputs=[str(src)], output=str(out), workers=args.workers,
                                          resume=True)
        for side in split_sides(opts, split):
            print_result(convert(side))

    if not 0.0 <= args.holdout < 1.0:
        raise UserError(f"--holdout: must be in [0, 1), got {args.holdout}")
    raw = work / "shards" / "raw"
    raw_holdout = work / "shards" / "raw-holdout"
    split = f"holdout={args.holdout}" if args.holdout > 0 else None
    print(f"[2/{steps}] convert -> {raw}" + (f" (and {raw_holdout}: {args.holdout:.0%} held out)" if split else ""))
    with table.step("convert raw", raw):
        convert_into(corpus, raw, split)
    shard_dirs = [raw, *([raw_holdout] if split else [])]

    if not args.skip_synth:
        py = synth_python()
        if py is None:
            print("[3/6] no synthesis environment (.venv-synth): skipping synthesis, templify and training; "
                  "`scripts/setup.sh synth` builds it")
        else:
            from ipt_engine.synth.config import load_config as load_synth_config
            from ipt_engine.templify.stage import run_templify

            synth = work / "synth"
            synth_config = load_synth_config(example_path("synth-cpu.yaml"), [f"engine.max_model_len={args.max_seq_len}"])
            who = args.model or "the tiny format-writing model (built once on CPU, then cached)"
            print(f"[3/6] synthesize {args.synth_limit} texts, {args.rounds} rounds with {who} -> {synth}")
            with table.step("synthesize", synth) as row:
                done = run_synth_job(py, {
                    "inputs": [str(corpus)], "output": str(synth), "model": args.model, "rounds": args.rounds,
                    "limit": args.synth_limit, "part_size": 16, "config": synth_config.model_dump(mode="json"),
                }, work / "synth-job.yaml")
                row.items_in, row.items_out = Count(done["texts"], "texts"), Count(done["pairs"], "pairs")
            templified = work / "templified"
            held = None
            if split:
                from ipt_engine.eval.pipeline_compare import split_synthesized

                held = split_synthesized(work, synth, corpus, args.holdout)
            print(f"[4/6] templify -> {templified}")
            with table.step("templify", templified):
                run_templify([held["train"] if held else synth], templified, resume=True)
                if held and held["entries"]:
                    run_templify([held["heldout"]], templified.with_name("templified-holdout"), resume=True)
            augmented = work / "shards" / "augmented"
            augmented_holdout = work / "shards" / "augmented-holdout"
            print(f"[5/6] convert -> {augmented}")
            with table.step("convert augmented", augmented):
                convert_into(templified, augmented)
                if held and held["entries"]:
                    convert_into(templified.with_name("templified-holdout"), augmented_holdout)
                    shard_dirs.append(augmented_holdout)
            shard_dirs.append(augmented)
            streams = {"raw_holdout": raw_holdout, "augmented_holdout": augmented_holdout}
            eval_streams = {k: str(v) for k, v in streams.items() if v in shard_dirs}
            if args.compare and args.train_steps > 0:
                from ipt_engine.eval.pipeline_compare import run_comparison

                run_comparison(args, work, table, raw=raw, augmented=augmented, eval_streams=eval_streams)
            elif args.train_steps > 0:
                train_model(args, work, table, raw=raw, augmented=augmented, eval_streams=eval_streams,
                            streams=len(shard_dirs))
                tasks = [t for t in args.eval_tasks.split(",") if t]
                if held and tasks:
                    from ipt_engine.eval.pipeline_compare import evaluate_model

                    print(f"[eval] ipt eval {','.join(tasks)} -> {work / 'eval'}")
                    with table.step("evaluate", work / "eval"):
                        evaluate_model(work / "model", tasks, work, "ipt")

    for d in shard_dirs:
        report = inspect_shards(d)
        print()
        print_report(report)
        if args.plot:
            png = work / f"{d.name}-doc-lengths.png"
            with table.step(f"plot {d.name}", png):
                plot_histogram(report, png)
            print(f"histogram: {png}")
    print()
    table.print()
    return 0


def train_model(args: argparse.Namespace, work: Path, table: Any, *, raw: Path, augmented: Path,
                eval_streams: dict[str, str], streams: int) -> None:
    """Step 6: the tiny Llama of ``tiny-cpu.yaml`` on raw + augmented shards, in this process."""
    from ipt_engine.eval.pipeline_compare import eval_override
    from ipt_engine.examples import example_path
    from ipt_engine.pipeline_report import Count
    from ipt_engine.train.config import load_config
    from ipt_engine.train.main import log_to_console, train

    out = work / "train"
    print(f"[6/6] train a tiny Llama on raw + augmented shards, {args.train_steps} batches -> {out}")
    with table.step("train", out) as row:
        log_to_console()
        cfg = load_config(example_path("tiny-cpu.yaml"), [
            f"max_duration={args.train_steps}ba",
            f"train_loader.streams.raw.local={raw}",
            f"train_loader.streams.augmented.local={augmented}",
            f"save_folder={out}/{{run_name}}/checkpoints",
            f"loggers.jsonl.path={out}/{{run_name}}/metrics.jsonl",
            f"export.hf_folder={work / 'model'}",  # what `ipt eval out/demo/model` reads
            eval_override(eval_streams),
        ])
        train(cfg)
        row.items_in, row.items_out = Count(streams, "streams"), Count(args.train_steps, "batches")
