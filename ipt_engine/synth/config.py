"""The synthesis configuration: engine, sampling, scheduling and HTTP-client settings, from YAML.

One nested dataclass tree with typed, defaulted, documented fields, so a YAML file, the CLI flags and
the benchmark all speak the same names (``engine.max_num_seqs``, ``sampling.max_tokens``...). Loading
checks every key and value up front and reports a bad one as a one-line :class:`UserError` naming the
key, because a typo in a config that steers a days-long job must not be silently ignored.

Defaults follow the paper: greedy decoding, ``max_tokens=400``, ``max_model_len=4096`` (the
pre-training sequence length). Engine fields left at ``None`` keep the engine's own default, which is
what the benchmark's baseline uses.

Stdlib only at import time (PyYAML is imported when a file is read).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ipt_engine.errors import UserError

EngineKind = Literal["vllm", "hf", "openai"]
Scheduler = Literal["auto", "pipelined", "rounds"]


@dataclass
class EngineConfig:
    """Options passed to the engine (vLLM names; the HF fallback uses the ones that apply to it)."""

    max_model_len: int = 4096
    """Context length the prompts are budgeted against: the pre-training sequence length."""
    max_num_seqs: int | None = None
    """Most sequences vLLM schedules at once (None: vLLM's default)."""
    max_num_batched_tokens: int | None = None
    """Most tokens vLLM puts in one step (None: vLLM's default)."""
    gpu_memory_utilization: float | None = None
    """Fraction of GPU memory vLLM may take (None: vLLM's default; ignored on CPU)."""
    enable_prefix_caching: bool | None = None
    """vLLM caches prefixes by default; False turns it off."""
    num_gpu_blocks_override: int | None = None
    """Fix the number of KV-cache blocks (None: sized from memory). Benchmarks use it to give a small
    model the KV pressure a 7B model has on a real corpus."""
    tensor_parallel_size: int = 1
    dtype: str = "auto"
    """Model dtype: auto, bfloat16, float16, float32."""
    kv_cache_dtype: str = "auto"
    seed: int = 0
    enforce_eager: bool = False
    """Skip CUDA-graph capture (faster start, slower steps); the CPU backend ignores it."""
    ngram_speculation: bool = False
    """Prompt-lookup (n-gram) speculative decoding: the synthesizer copies spans of the text."""
    num_speculative_tokens: int = 4
    prompt_lookup_min: int = 2
    prompt_lookup_max: int = 4
    batch_size: int = 64
    """Prompts per ``generate`` call for round-by-round engines (HF); a failing call fails this many."""


@dataclass
class SamplingConfig:
    temperature: float = 0.0
    """0 is greedy, the paper's setting."""
    top_p: float = 1.0
    max_tokens: int = 400
    """Most tokens generated per prompt; the prompt budget is max_model_len minus this."""


@dataclass
class OpenAIConfig:
    """The HTTP client for running ``vllm serve`` instances (``--engine openai``)."""

    base_urls: list[str] = field(default_factory=list)
    """e.g. http://node1:8000/v1; requests are spread over them."""
    served_model: str | None = None
    """The ``model`` field sent to the server (default: the --model argument)."""
    api_key_env: str | None = None
    """Name of the environment variable that holds the API key, if the servers need one."""
    timeout_s: float = 600.0
    concurrency: int = 64
    """Requests in flight over all servers."""
    retries: int = 2
    """Transport retries per request (connection errors, 5xx) before the request counts as failed."""


@dataclass
class SynthConfig:
    engine: EngineConfig = field(default_factory=EngineConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)
    scheduler: Scheduler = "auto"
    """pipelined: a chain's next round is sent as soon as its previous one returns (vLLM, openai);
    rounds: the paper's procedure, one generate call per round; auto: pipelined where supported."""


def _check(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to type ``tp``, or raise a UserError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check(value, inner[0], key)
    if origin is Literal:
        if value not in args:
            raise UserError(f"{key}: {value!r} is not one of {', '.join(map(str, args))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"{key}: expected a list, got {type(value).__name__}")
        return [_check(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UserError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise UserError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise UserError(f"{key}: expected a string, got {value!r}")
    raise TypeError(f"unsupported config type {tp!r} for {key}")


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise UserError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(f"{prefix}{unknown[0]}: unknown key (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value or {}, f"{prefix}{name}.")
        else:
            kwargs[name] = _check(value, tp, f"{prefix}{name}")
    return cls(**kwargs)


def validate(cfg: SynthConfig) -> SynthConfig:
    """Check the ranges the types cannot express; return ``cfg``."""
    e, s, o = cfg.engine, cfg.sampling, cfg.openai
    positive = {
        "engine.max_model_len": e.max_model_len,
        "engine.tensor_parallel_size": e.tensor_parallel_size,
        "engine.num_speculative_tokens": e.num_speculative_tokens,
        "engine.prompt_lookup_min": e.prompt_lookup_min,
        "engine.batch_size": e.batch_size,
        "sampling.max_tokens": s.max_tokens,
        "openai.concurrency": o.concurrency,
    }
    for key in ("max_num_seqs", "max_num_batched_tokens", "num_gpu_blocks_override"):
        if getattr(e, key) is not None:
            positive[f"engine.{key}"] = getattr(e, key)
    for key, value in positive.items():
        if value < 1:
            raise UserError(f"{key}: must be at least 1, got {value}")
    if e.prompt_lookup_max < e.prompt_lookup_min:
        raise UserError("engine.prompt_lookup_max: must be at least engine.prompt_lookup_min")
    if e.gpu_memory_utilization is not None and not 0 < e.gpu_memory_utilization <= 1:
        raise UserError(f"engine.gpu_memory_utilization: must be in (0, 1], got {e.gpu_memory_utilization}")
    if s.max_tokens >= e.max_model_len:
        raise UserError(
            f"sampling.max_tokens ({s.max_tokens}) must be smaller than engine.max_model_len "
            f"({e.max_model_len}): no room would be left for the prompt"
        )
    if s.temperature < 0:
        raise UserError(f"sampling.temperature: must be >= 0, got {s.temperature}")
    if not 0 < s.top_p <= 1:
        raise UserError(f"sampling.top_p: must be in (0, 1], got {s.top_p}")
    if o.retries < 0:
        raise UserError(f"openai.retries: must be >= 0, got {o.retries}")
    if o.timeout_s <= 0:
        raise UserError(f"openai.timeout_s: must be positive, got {o.timeout_s}")
    return cfg


def from_dict(data: dict[str, Any] | None) -> SynthConfig:
    return validate(_build(SynthConfig, data or {}, ""))


def load_config(path: str | Path | None) -> SynthConfig:
    """Read a YAML synth config (None: the defaults)."""
    if path is None:
        return from_dict({})
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: config file not found")
    import yaml

    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise UserError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    try:
        return from_dict(data)
    except UserError as e:
        raise UserError(f"{p}: {e}") from None


def _parse_scalar(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(cfg: SynthConfig, overrides: list[str] | dict[str, Any]) -> SynthConfig:
    """Apply dotted ``key=value`` overrides (``engine.max_num_seqs=128``); values parse as YAML."""
    data = to_dict(cfg)
    items = overrides.items() if isinstance(overrides, dict) else (_split_override(o) for o in overrides)
    for key, value in items:
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise UserError(f"{key}: unknown config section {part!r}")
            node = node[part]
        if parts[-1] not in node:
            raise UserError(f"{key}: unknown config key")
        node[parts[-1]] = _parse_scalar(value) if isinstance(value, str) else value
    return from_dict(data)


def _split_override(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise UserError(f"--set {text!r}: expected key=value, e.g. engine.max_num_seqs=128")
    key, value = text.split("=", 1)
    return key.strip(), value


def to_dict(cfg: SynthConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
