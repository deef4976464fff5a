"""The synthesis configuration: engine, sampling, scheduling and HTTP-client settings, from YAML.

One tree of pydantic sections with typed, defaulted, documented fields, so a YAML file, ``--set``
overrides and the benchmark all speak the same names (``engine.max_num_seqs``, ``sampling.max_tokens``...).
Loading goes through :func:`ipt_engine.configuration.load`, like every stage's config: every key and
value is checked up front and a bad one is a one-line :class:`~ipt_engine.errors.UserError` naming the
file (or the command line), the key and the value, because a typo in a config that steers a days-long
job must not be silently ignored.

Defaults follow the paper: greedy decoding, ``max_tokens=400``, ``max_model_len=4096`` (the
pre-training sequence length). Engine fields left at ``None`` keep the engine's own default, which is
what the benchmark's baseline uses. Runtime options (``--workers``, ``--ray``...) are flags of the
command, not part of this config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from ipt_engine.configuration import Invalid, Section, load, validate

EngineKind = Literal["vllm", "hf", "openai"]
Scheduler = Literal["auto", "pipelined", "rounds"]
AtLeast1 = Annotated[int, Field(ge=1)]


class EngineConfig(Section):
    """Options passed to the engine (vLLM names; the HF fallback uses the ones that apply to it)."""

    max_model_len: AtLeast1 = 4096
    """Context length the prompts are budgeted against: the pre-training sequence length."""
    max_num_seqs: AtLeast1 | None = None
    """Most sequences vLLM schedules at once (None: vLLM's default)."""
    max_num_batched_tokens: AtLeast1 | None = None
    """Most tokens vLLM puts in one step (None: vLLM's default)."""
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] | None = None
    """Fraction of GPU memory vLLM may take (None: vLLM's default; ignored on CPU)."""
    enable_prefix_caching: bool | None = None
    """vLLM caches prefixes by default; False turns it off."""
    num_gpu_blocks_override: AtLeast1 | None = None
    """Fix the number of KV-cache blocks (None: sized from memory). Benchmarks use it to give a small
    model the KV pressure a 7B model has on a real corpus."""
    tensor_parallel_size: AtLeast1 = 1
    """GPUs one engine spans (vLLM tensor parallelism)."""
    dtype: str = "auto"
    """Model dtype: auto, bfloat16, float16, float32."""
    kv_cache_dtype: str = "auto"
    """KV-cache dtype (auto: the model's; fp8 halves it on GPUs that support it)."""
    seed: int = 0
    """Sampling seed (greedy decoding does not use it)."""
    enforce_eager: bool = False
    """Skip CUDA-graph capture (faster start, slower steps); the CPU backend ignores it."""
    ngram_speculation: bool = False
    """Prompt-lookup (n-gram) speculative decoding: the synthesizer copies spans of the text."""
    num_speculative_tokens: AtLeast1 = 4
    """Tokens proposed per step with ``ngram_speculation``."""
    prompt_lookup_min: AtLeast1 = 2
    """Shortest n-gram matched against the prompt."""
    prompt_lookup_max: int = 4
    """Longest n-gram matched against the prompt (at least ``prompt_lookup_min``)."""
    batch_size: AtLeast1 = 64
    """Prompts per ``generate`` call for round-by-round engines (HF); a failing call fails this many."""

    @model_validator(mode="after")
    def _lookup(self) -> EngineConfig:
        if self.prompt_lookup_max < self.prompt_lookup_min:
            raise Invalid(f"must be at least engine.prompt_lookup_min ({self.prompt_lookup_min}), "
                          f"got {self.prompt_lookup_max}", "prompt_lookup_max")
        return self


class SamplingConfig(Section):
    """How each generation is sampled; the defaults are the paper's."""

    temperature: Annotated[float, Field(ge=0)] = 0.0
    """0 is greedy, the paper's setting."""
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    """Nucleus sampling; 1 keeps the whole distribution."""
    max_tokens: AtLeast1 = 400
    """Most tokens generated per prompt; the prompt budget is max_model_len minus this."""


class OpenAIConfig(Section):
    """The HTTP client for running ``vllm serve`` instances (``--engine openai``)."""

    base_urls: list[str] = Field(default_factory=list)
    """e.g. http://node1:8000/v1; requests are spread over them."""
    served_model: str | None = None
    """The ``model`` field sent to the server (default: the --model argument)."""
    api_key_env: str | None = None
    """Name of the environment variable that holds the API key, if the servers need one."""
    timeout_s: Annotated[float, Field(gt=0)] = 600.0
    """Seconds one request may take."""
    concurrency: AtLeast1 = 64
    """Requests in flight over all servers."""
    retries: Annotated[int, Field(ge=0)] = 2
    """Transport retries per request (connection errors, 5xx) before the request counts as failed."""


class SynthConfig(Section):
    """What decides ``ipt synthesize``'s generations (engine, sampling, scheduler) and how it reaches
    ``vllm serve`` instances (openai); ``--config FILE`` and ``--set key=value`` set it."""

    engine: EngineConfig = Field(default_factory=EngineConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    openai: OpenAIConfig = Field(default_factory=OpenAIConfig)
    scheduler: Scheduler = "auto"
    """pipelined: a chain's next round is sent as soon as its previous one returns (vLLM, openai);
    rounds: the paper's procedure, one generate call per round; auto: pipelined where supported."""

    @model_validator(mode="after")
    def _room_for_the_prompt(self) -> SynthConfig:
        if self.sampling.max_tokens >= self.engine.max_model_len:
            raise Invalid(f"must be smaller than engine.max_model_len ({self.engine.max_model_len}) to leave room "
                          f"for the prompt, got {self.sampling.max_tokens}", "sampling", "max_tokens")
        return self


def from_dict(data: dict[str, Any] | None) -> SynthConfig:
    """A config from plain data (the benchmark's and tests' configs, a worker's copy)."""
    return validate(SynthConfig, data or {})


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> SynthConfig:
    """Read a YAML synth config (None: the defaults) and apply ``--set key=value`` overrides."""
    return load(SynthConfig, path, list(overrides or []))


def apply_overrides(cfg: SynthConfig, overrides: list[str]) -> SynthConfig:
    """``cfg`` with dotted ``key=value`` overrides (``engine.max_num_seqs=128``) applied and checked."""
    return load(SynthConfig, overrides=overrides, data=to_dict(cfg))


def to_dict(cfg: SynthConfig) -> dict[str, Any]:
    return cfg.model_dump(mode="json")
