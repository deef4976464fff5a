"""One synthesis job from a YAML file: how ``ipt pipeline`` crosses into the synthesis environment.

vLLM and Composer cannot share an environment (docs/ARCHITECTURE.md, "Two environments"), so the main
job runs this stage in the other interpreter, once, with a validated config file instead of a command
line::

    .venv-synth/bin/python -m ipt_engine.synth.job JOB.yaml

It builds the tiny format-writing model first when the job names no model, runs
:func:`ipt_engine.synth.stage.run_synthesize`, and prints one JSON line on stdout (the model used, the
output, the counts) for the caller; progress goes to stderr.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, Literal

from pydantic import Field

from ipt_engine.configuration import Section
from ipt_engine.synth.config import SynthConfig


class SynthJob(Section):
    """A synthesize run, as ``ipt synthesize``'s options say it."""

    inputs: list[str]
    """Raw text files or directories."""
    output: str
    """The read-collection output directory (resumed when partial)."""
    model: str | None = None
    """The synthesizer (directory or hub id); null: the tiny format-writing model, built once on CPU."""
    engine: Literal["vllm", "hf", "openai"] = "vllm"
    rounds: Annotated[int, Field(ge=1)] = 2
    limit: Annotated[int, Field(ge=1)] | None = None
    part_size: Annotated[int, Field(ge=1)] = 1000
    text_field: str = "text"
    resume: bool = True
    config: SynthConfig = Field(default_factory=SynthConfig)
    """The synth config (engine, sampling, scheduler), as ``--config`` would give it."""


def run_job(job: SynthJob) -> dict[str, Any]:
    """Run ``job``; what it did, for the caller's report."""
    from ipt_engine.synth.stage import EngineSpec, run_synthesize

    model = job.model
    if model is None:
        from ipt_engine.synth.format_model import format_model_dir

        model = str(format_model_dir())
    result = run_synthesize(job.inputs, job.output, EngineSpec(job.engine, model, job.config), rounds=job.rounds,
                            part_size=job.part_size, limit=job.limit, text_field=job.text_field, resume=job.resume)
    return {"model": model, "output": job.output, "texts": int(result.stats.get("texts", 0)),
            "chains": int(result.stats.get("chains", 0)), "pairs": int(result.stats.get("pairs", 0)),
            "seconds": result.seconds, "complete": not result.failed}


def main(argv: list[str] | None = None) -> int:
    from ipt_engine.configuration import load
    from ipt_engine.errors import UserError

    args = sys.argv[1:] if argv is None else argv
    if args in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    if len(args) != 1:
        print("usage: python -m ipt_engine.synth.job JOB.yaml", file=sys.stderr)
        return 2
    try:
        done = run_job(load(SynthJob, args[0]))
    except UserError as e:
        print(f"ipt synthesize: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
