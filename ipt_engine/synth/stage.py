"""One part of ``ipt synthesize``: plan its texts into chains, run them on the process's engine.

The same code runs in the CLI's process, in a ``--workers`` pool process (one engine and one GPU each)
and in a Ray actor (:mod:`ipt_engine.synth.ray_runner`), so a part's rows never depend on where it ran.
What crosses a process boundary is an :class:`EngineSpec`: the engine kind, the model and the typed
:class:`~ipt_engine.synth.config.SynthConfig` (pydantic models pickle); the engine itself is built once
per process, on first use, so a resumed run with nothing left to do starts none.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from ipt_engine.io.parts import PartExecutor, PartStageResult
    from ipt_engine.synth.config import SynthConfig
    from ipt_engine.synth.engines import Engine


@dataclass(frozen=True)
class EngineSpec:
    """Which engine a part runs on: ``kind`` (vllm, hf, openai), ``model`` and the synth config."""

    kind: str
    model: str
    config: SynthConfig

    def key(self) -> tuple[str, str, str]:
        """Equal for specs that build the same engine (the config by value, not identity)."""
        return self.kind, self.model, self.config.model_dump_json()


_ENGINE: dict[tuple[str, str, str], Engine] = {}


def _pin_worker(gpus: list[str]) -> None:
    """In a ``--workers`` pool process: pin one GPU and keep vLLM's engine core in-process.

    Pool workers are daemonic and may not start children, which vLLM's default multiprocessing
    engine core would; one engine per process needs no extra process anyway.
    """
    import multiprocessing as mp

    identity = getattr(mp.current_process(), "_identity", ()) or (0,)
    worker = identity[0] - 1 if identity[0] else 0
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ["CUDA_VISIBLE_DEVICES"] = gpus[worker % len(gpus)]


def get_engine(spec: EngineSpec, gpus: list[str] | None = None) -> Engine:
    """The process's engine for ``spec``, built on first use; another spec replaces it."""
    key = spec.key()
    if key not in _ENGINE:
        from ipt_engine.synth.engines import make_engine

        if gpus:
            _pin_worker(gpus)
        close_engines()
        _ENGINE[key] = make_engine(spec.kind, spec.model, spec.config)
    return _ENGINE[key]


def close_engines() -> None:
    """Release the process's engine (GPU memory, server connections)."""
    for engine in _ENGINE.values():
        engine.close()
    _ENGINE.clear()


def process_part(spec: EngineSpec, rounds: int, gpus: list[str] | None, live: LiveProgress | None,
                 index: int, records: list[Any]) -> tuple[list[Any], dict[str, float]]:
    """Plan one part's texts into ``rounds``-shot chains, run them, return (read collections, stats)."""
    from ipt_engine.synth.pipelined import run_chains
    from ipt_engine.synth.planner import plan_chains

    engine = get_engine(spec, gpus)
    cfg = spec.config
    texts = [r.text for r in records]
    chains = plan_chains(texts, rounds, max_model_len=cfg.engine.max_model_len,
                         max_new_tokens=cfg.sampling.max_tokens, tokenizer=engine.tokenizer)
    drive = run_chains(chains, engine, scheduler=cfg.scheduler, batch_size=cfg.engine.batch_size,
                       progress=live.update if live is not None else None)
    rows = [chain.entries() for chain in chains]
    entries = [e for row in rows for e in row]
    stats = {
        "texts": len(texts),
        "chains": len(chains),
        "entries": len(entries),
        "entries_with_pairs": sum(1 for e in entries if e["QA_list"]),
        "pairs": sum(len(e["QA_list"]) for e in entries),
        "inherited": sum(1 for e in entries if e["inherit_from_prev"]),
        "requests": drive.requests,
        "unparsed": drive.unparsed,
        "failed_requests": drive.failed_requests,
        "generated_tokens": drive.generated_tokens,
        "generate_seconds": drive.seconds,
        "prompt_tokens": drive.prompt_tokens,
        "cached_prompt_tokens": drive.cached_tokens,
    }
    return rows, stats


def resume_params(spec: EngineSpec) -> dict[str, Any]:
    """The config values that decide the generations, as dotted keys (a refused ``--resume`` names the
    one that changed). HTTP settings and the HF batch size do not, so they may change on resume."""
    dumped = spec.config.model_dump(mode="json")
    return {**{f"{section}.{k}": v for section in ("engine", "sampling") for k, v in dumped[section].items()
               if k != "batch_size"},
            "scheduler": dumped["scheduler"]}


def run_synthesize(inputs: Sequence[str | Path], output: str | Path, spec: EngineSpec, *, rounds: int,
                   part_size: int, limit: int | None = None, text_field: str = "text", resume: bool = False,
                   overwrite: bool = False, on_error: str = "fail", workers: int = 1,
                   gpus: list[str] | None = None, executor: PartExecutor | None = None,
                   live: LiveProgress | None = None) -> PartStageResult:
    """The synthesize stage: every text under ``inputs`` into read collections in ``output``, part by
    part, with ordered atomic commits (see :func:`ipt_engine.io.parts.run_part_stage`). ``workers``,
    ``gpus`` and ``executor`` decide where parts run, never what they contain, so they stay out of the
    manifest's resume check; the engine is closed at the end."""
    import functools

    from ipt_engine.errors import UserError
    from ipt_engine.io.discover import expand_inputs
    from ipt_engine.io.parts import run_part_stage

    for flag, value in (("--rounds", rounds), ("--workers", workers), ("--limit", limit), ("--part-size", part_size)):
        if value is not None and value < 1:
            raise UserError(f"{flag}: must be >= 1, got {value}")
    sources = expand_inputs([str(i) for i in inputs])
    params = {"model": spec.model, "engine": spec.kind, "rounds": rounds, "part_size": part_size, "limit": limit,
              "text_field": text_field, "inputs": [str(p) for p in sources], **resume_params(spec)}
    try:
        return run_part_stage(
            stage="synthesize", sources=sources, output=output, params=params,
            process=functools.partial(process_part, spec, rounds, gpus, live), part_size=part_size,
            resume=resume, overwrite=overwrite, on_error=on_error, text_field=text_field, mode="text",
            workers=workers, progress_unit="text", limit=limit, executor=executor,
        )
    finally:
        close_engines()


class LiveProgress:
    """A second progress line while a part is generating: requests/s and generated tokens/s."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(unit="req", desc="generating", dynamic_ncols=True, position=1, leave=False)
        self.tokens = 0
        self.t0 = time.perf_counter()

    def update(self, requests: int, tokens: int) -> None:
        self.tokens += tokens
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        self.bar.set_postfix_str(f"{self.tokens / elapsed:,.0f} tok/s", refresh=False)
        self.bar.update(requests)

    def close(self) -> None:
        self.bar.close()
