"""Evaluate a trained model on lm-evaluation-harness tasks, offline by default; compare two runs.

  ipt eval out/demo/model --tasks ipt_heldout_qa,ipt_heldout_ppl
  ipt eval out/demo/train/tiny-cpu/checkpoints --tasks ipt_heldout_qa      # a Composer checkpoint
  ipt eval MODEL --tasks piqa,hellaswag,arc_easy                            # lm-eval's own (needs the hub)
  ipt eval --compare raw.json augmented.json
  ipt eval --make-data DIR --collections heldout.jsonl --texts corpus.jsonl

MODEL is a Hugging Face directory (`ipt train`'s export) or a Composer checkpoint (`.pt`, or a
save_folder with latest-rank0.pt). The shipped tasks (`ipt eval --list-tasks`) read local JSONL from
--data (default: the nearest `eval-data` directory beside the model or above it, which `ipt pipeline`
writes). Each run writes one JSON result file and a markdown table beside it (--output).
"""

from __future__ import annotations

import argparse
import datetime
import re
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", metavar="CHECKPOINT_OR_HF_DIR", help="the model to evaluate")
    p.add_argument("--tasks", default="ipt_heldout_qa",
                   help="comma-separated lm-eval task names (ipt_* are shipped and offline)")
    p.add_argument("--data", metavar="DIR", help="held-out JSONL for the ipt_* tasks (default: nearest eval-data)")
    p.add_argument("--output", "-o", metavar="FILE.json", help="result file (default: eval-results/<model>-<time>.json)")
    p.add_argument("--attn", default="sdpa", choices=("sdpa", "eager", "packed", "flex"),
                   help="attention: transformers' sdpa/eager, or ours (packed, flex; batch size 1)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-fewshot", type=int, default=None, help="default: each task's own")
    p.add_argument("--limit", type=int, default=None, help="only the first N documents of each task")
    p.add_argument("--max-length", type=int, default=None, help="context window (default: the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"),
                   help="print two result files side by side with B - A and its standard error")
    p.add_argument("--names", default=None, help="with --compare: column names, e.g. raw,augmented")
    p.add_argument("--make-data", metavar="DIR", help="write the ipt_* tasks' JSONL into DIR and exit")
    p.add_argument("--collections", nargs="*", default=[], help="with --make-data: held-out read collections")
    p.add_argument("--texts", nargs="*", default=[], help="with --make-data: held-out raw texts (JSONL, text field)")
    p.add_argument("--list-tasks", action="store_true", help="list the shipped tasks and exit")


def _default_output(model: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(Path(model).resolve()).strip("/"))[-60:].strip("-")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path("eval-results") / f"{slug}-{stamp}.json"


def run(args: argparse.Namespace) -> int:
    from ipt_engine.errors import UserError

    if args.list_tasks:
        from ipt_engine.eval.harness import shipped_tasks

        for name, path in shipped_tasks().items():
            print(f"{name}\t{path}")
        return 0
    if args.compare:
        from ipt_engine.eval.harness import load_result
        from ipt_engine.eval.report import compare_table

        names = tuple(args.names.split(",")) if args.names else ("A", "B")
        if len(names) != 2:
            raise UserError(f"--names: expected two comma-separated names, got {args.names!r}")
        print(compare_table(load_result(args.compare[0]), load_result(args.compare[1]), names))
        return 0
    if args.make_data:
        from ipt_engine.eval.data import build_eval_data

        if not args.collections and not args.texts:
            raise UserError("--make-data: give --collections and/or --texts")
        counts = build_eval_data(args.make_data, collections=args.collections, texts=args.texts)
        print(f"{args.make_data}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        return 0
    if not args.model:
        raise UserError("give CHECKPOINT_OR_HF_DIR (or --compare A.json B.json, --make-data DIR, --list-tasks)")
    from ipt_engine.eval.harness import evaluate, save_result
    from ipt_engine.eval.report import result_table

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    result = evaluate(args.model, tasks, data_dir=args.data, attn=args.attn, device=args.device, dtype=args.dtype,
                      batch_size=args.batch_size, num_fewshot=args.num_fewshot, limit=args.limit,
                      max_length=args.max_length, seed=args.seed)
    out, md = save_result(result, args.output or _default_output(args.model))
    print(result_table(result))
    print(f"\nresults: {out}  table: {md}")
    return 0
