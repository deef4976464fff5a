"""Run the whole pipeline on the embedded default corpus (the Python standard library's documentation,
present on every machine) — the README's main job:

  1. write the corpus                      out/demo/corpus/raw.jsonl
  2. convert it to packed shards           out/demo/shards/raw      (--holdout: out/demo/shards/raw-holdout)
  3. synthesize instruction-response pairs out/demo/synth          (synth env, vLLM; tiny format model)
  4. templify them into pre-training texts out/demo/templified     (held-out entries: templified-holdout)
  5. convert those to packed shards        out/demo/shards/augmented (and augmented-holdout)
  6. train a tiny Llama on both, mixed     out/demo/train          (examples/tiny-cpu.yaml)
  7. evaluate it on the held-out tasks     out/demo/eval           (`ipt eval`, data in out/demo/eval-data)

and print the `ipt inspect` summaries, then one table of every step: items in -> out, seconds, output
path (plots included). --holdout carves a fraction of the documents out of training by the hash of their
text (`ipt convert --split`), and the synthesized entries of those documents with them; training
reports the held-out loss of both streams, and the held-out read collections and texts become the
offline evaluation tasks. --compare instead trains two models from the same initialization for the same
number of tokens — raw only, and raw + augmented as tiny-cpu.yaml mixes them — evaluates both and
writes out/demo/compare/comparison.md and loss-curves.png. Every step resumes: a rerun skips what is complete. Synthesis
runs in the synthesis environment (.venv-synth, or $IPT_SYNTH_PYTHON), because vLLM and Composer cannot
share one; without it, steps 3-6 are skipped with a note. The synthesizer here is a tiny model
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

REPO = Path(__file__).resolve().parents[2]


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


def _synth_python() -> Path | None:
    explicit = os.environ.get("IPT_SYNTH_PYTHON")
    if explicit:
        return Path(explicit)
    candidate = REPO / ".venv-synth" / "bin" / "python"
    return candidate if candidate.exists() else None


def _run_synth(py: Path, argv: list[str]) -> str:
    """Run a command in the synth env; stream its stderr (progress) and return its stdout."""
    from ipt_engine.errors import UserError

    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
           "VLLM_ENABLE_V1_MULTIPROCESSING": os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0")}
    proc = subprocess.run([str(py), *argv], stdout=subprocess.PIPE, stderr=sys.stderr, text=True, env=env)
    if proc.returncode != 0:
        raise UserError(f"synth env command failed (exit {proc.returncode}): {' '.join(argv[:4])} ...")
    return proc.stdout


def _eval_override(streams: dict[str, str]) -> str:
    """The ``eval`` section of the training config: the held-out streams, or none."""
    import json

    return f"eval.streams={json.dumps(streams)}" if streams else "eval=null"


def _split_synth(args: argparse.Namespace, work: Path, synth: Path) -> dict[str, object]:
    """Held-out read collections (by each entry's context, the rule `ipt convert --split` applied to the
    raw documents), the held-out raw texts, and the evaluation data built from both."""
    import json

    from ipt_engine.data.split import is_heldout
    from ipt_engine.eval.data import build_eval_data, iter_texts, split_collections

    out = work / "synth-split"
    out.mkdir(parents=True, exist_ok=True)
    train, heldout = out / "train.jsonl", out / "heldout.jsonl"
    n_train, n_held = split_collections([synth], args.holdout, train, heldout)
    texts = out / "heldout-texts.jsonl"
    corpus = work / "corpus" / "raw.jsonl"
    with open(texts, "w", encoding="utf-8") as f:
        for text in iter_texts([corpus]):
            if is_heldout(text, args.holdout):
                f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    counts = build_eval_data(work / "eval-data", collections=[heldout] if n_held else [], texts=[texts])
    print(f"      held out: {n_held} synthesized entries of {n_train + n_held}; evaluation data "
          + ", ".join(f"{k} {v}" for k, v in counts.items()) + f" -> {work / 'eval-data'}")
    return {"train": train, "heldout": heldout, "entries": n_held}


def run(args: argparse.Namespace) -> int:
    from ipt_engine.cli import main as ipt
    from ipt_engine.corpus import write_default_corpus
    from ipt_engine.data.inspect import inspect_shards, plot_histogram, print_report
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

    def convert(src: Path, out: Path, split: list[str] | None = None) -> None:
        code = ipt(["convert", str(src), "--output", str(out), "--tokenizer", "mistral-v1",
                    "--max-seq-len", str(args.max_seq_len), "--packing", args.packing,
                    "--workers", str(args.workers), "--resume", *(split or [])])
        if code:
            raise UserError(f"convert into {out} failed")

    if not 0.0 <= args.holdout < 1.0:
        raise UserError(f"--holdout: must be in [0, 1), got {args.holdout}")
    raw = work / "shards" / "raw"
    raw_holdout = work / "shards" / "raw-holdout"
    split = ["--split", f"holdout={args.holdout}"] if args.holdout > 0 else []
    print(f"[2/{steps}] convert -> {raw}" + (f" (and {raw_holdout}: {args.holdout:.0%} held out)" if split else ""))
    with table.step("convert raw", raw):
        convert(corpus, raw, split)
    shard_dirs = [raw, *([raw_holdout] if split else [])]

    if not args.skip_synth:
        py = _synth_python()
        if py is None:
            print("[3/6] no synthesis environment (.venv-synth): skipping synthesis, templify and training; "
                  "`scripts/setup.sh synth` builds it")
        else:
            model = args.model
            if model is None:
                print("[3/6] synthesizer: tiny format-writing model (built once on CPU, then cached)")
                with table.step("format model") as row:
                    built = _run_synth(py, ["-m", "ipt_engine.synth.format_model"])
                    model = row.output = built.strip().splitlines()[-1]
            synth = work / "synth"
            print(f"[3/6] synthesize {args.synth_limit} texts, {args.rounds} rounds -> {synth}")
            with table.step("synthesize", synth):
                _run_synth(py, ["-m", "ipt_engine", "synthesize", str(corpus), "--output", str(synth),
                                "--model", model, "--rounds", str(args.rounds), "--limit", str(args.synth_limit),
                                "--part-size", "16", "--resume",
                                "--config", str(example_path("synth-cpu.yaml")),
                                "--set", f"engine.max_model_len={args.max_seq_len}"])
            templified = work / "templified"
            held = _split_synth(args, work, synth) if split else None
            print(f"[4/6] templify -> {templified}")
            with table.step("templify", templified):
                src = held["train"] if held else synth
                if ipt(["templify", str(src), "--output", str(templified), "--resume"]):
                    raise UserError("templify failed")
                if held and held["entries"]:
                    if ipt(["templify", str(held["heldout"]), "--output", str(templified.with_name("templified-holdout")),
                            "--resume"]):
                        raise UserError("templify of the held-out collections failed")
            augmented = work / "shards" / "augmented"
            augmented_holdout = work / "shards" / "augmented-holdout"
            print(f"[5/6] convert -> {augmented}")
            with table.step("convert augmented", augmented):
                convert(templified, augmented)
                if held and held["entries"]:
                    convert(templified.with_name("templified-holdout"), augmented_holdout)
                    shard_dirs.append(augmented_holdout)
            shard_dirs.append(augmented)
            streams = {"raw_holdout": raw_holdout, "augmented_holdout": augmented_holdout}
            eval_streams = {k: str(v) for k, v in streams.items() if v in shard_dirs}
            if args.compare and args.train_steps > 0:
                from ipt_engine.eval.pipeline_compare import run_comparison

                run_comparison(args, work, table, raw=raw, augmented=augmented, eval_streams=eval_streams)
            elif args.train_steps > 0:
                train = work / "train"
                print(f"[6/6] train a tiny Llama on raw + augmented shards, {args.train_steps} batches -> {train}")
                with table.step("train", train) as row:
                    code = ipt(["train", str(example_path("tiny-cpu.yaml")),
                                f"max_duration={args.train_steps}ba",
                                f"train_loader.streams.raw.local={raw}",
                                f"train_loader.streams.augmented.local={augmented}",
                                f"save_folder={train}/{{run_name}}/checkpoints",
                                f"loggers.jsonl.path={train}/{{run_name}}/metrics.jsonl",
                                _eval_override(eval_streams)])
                    if code:
                        raise UserError("training failed")
                    row.items_in, row.items_out = Count(len(shard_dirs), "streams"), Count(args.train_steps, "batches")
                tasks = [t for t in args.eval_tasks.split(",") if t]
                if held and tasks:
                    from ipt_engine.eval.pipeline_compare import evaluate_model

                    print(f"[eval] ipt eval {','.join(tasks)} -> {work / 'eval'}")
                    with table.step("evaluate", work / "eval"):
                        evaluate_model(train / "tiny-cpu" / "checkpoints" / "huggingface", tasks, work, "ipt")

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
