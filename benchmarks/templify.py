"""Templify throughput: read collections per second on one core.

Collections are made like the released corpora's lines (1-4 entries of a few hundred words, 0-5 pairs
each, a mix of free-form, multiple-choice and chain-of-thought pairs, runs joined by
inherit_from_prev). The paper's templating (microsoft/LMOps instruction_pretrain) is a repository
script, not an installable package, and is not available here, so the baseline is recorded as null.
"""

from __future__ import annotations

import random

from benchmarks.common import case, median_time, write_results
from ipt_engine.templify import collection_error, templify, templify_valid


def make_collections(n: int, seed: int = 0) -> list[list[dict]]:
    rng = random.Random(seed)
    words = "the of model data text pre training instruction response pair synthesizer corpus token".split()
    out = []
    for _ in range(n):
        entries = []
        for k in range(rng.randint(1, 4)):
            qa = []
            for j in range(rng.randint(0, 5)):
                q = " ".join(rng.choices(words, k=rng.randint(5, 15))) + f" {j}?"
                a = " ".join(rng.choices(words, k=rng.randint(1, 20)))
                kind = rng.random()
                if kind < 0.2:
                    opts = [" ".join(rng.choices(words, k=3)) for _ in range(4)]
                    q, a = q + "\nOptions:\n- " + "\n- ".join(opts), rng.choice(opts)
                elif kind < 0.35:
                    q, a = q + "\nLet's think step by step.", a + ".\nTherefore, the answer is " + words[j]
                qa.append({"Q": q, "A": a})
            context = " ".join(rng.choices(words, k=rng.randint(100, 400)))
            entries.append({"context": context, "QA_list": qa, "inherit_from_prev": k > 0 and bool(qa)})
        out.append(entries)
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="500 collections, 3 repeats (smoke run)")
    ap.add_argument("--out-dir", default=None, help="results directory (default benchmarks/results)")
    args = ap.parse_args(argv)
    n = 500 if args.quick else 5000
    collections = make_collections(n)

    def ours() -> None:
        for i, c in enumerate(collections):
            templify(c, i)

    def ours_prevalidated() -> None:
        for i, c in enumerate(collections):
            templify_valid(c, i)

    def validate_only() -> None:
        for c in collections:
            collection_error(c)

    cases = []
    for name, fn in (("templify", ours), ("templify_no_validation", ours_prevalidated), ("validate", validate_only)):
        repeats = 3 if args.quick else 5
        t, samples = median_time(fn, repeats=repeats)
        rate = n / t
        cases.append(case(name, {"collections": n, "cores": 1}, "collections/s/core", None, rate, repeats=repeats,
                          spread={"ours": [n / s for s in (max(samples), min(samples))]}))
        print(f"{name:24s} {rate:12,.0f} collections/s/core")
    path = write_results("templify", cases, out_dir=args.out_dir, extra={"baseline": None, "baseline_note": (
        "the paper's templating (microsoft/LMOps instruction_pretrain/utils) is not installable here")})
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
