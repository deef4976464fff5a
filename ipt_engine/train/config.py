"""The training config: one pydantic section per part of the YAML file.

Field names follow llm-foundry where the idea is the same (``global_train_batch_size``,
``device_train_microbatch_size``, ``max_duration``, ``save_interval``, ``autoresume``, streams with
``local`` / ``remote`` / ``proportion``), so a user moving from it recognizes the file. Durations are
Composer time strings (``10ba``, ``1ep``, ``2000000000tok``). Everything is checked when the file is
loaded (:func:`load_config`, through :func:`ipt_engine.configuration.load`), before any process touches
a GPU; the checks that need the run's world size or its files follow in :func:`check_batch_sizes` and
:func:`check_local_paths`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from ipt_engine.configuration import Invalid, Section, load
from ipt_engine.errors import UserError

# The kernels' own names (ipt_engine.kernels.backends), one vocabulary for configs, benchmarks and kernels.
AttnImplementation = Literal["packed", "flex", "sdpa_dense", "sdpa_segments"]
_TIME = re.compile(r"^\d+(ep|ba|sp|tok)$")
_DURATION = re.compile(r"^(\d+(ep|ba|sp|tok)|(0?\.\d+|1(\.0*)?)dur)$")
_TIME_RULE = "must be a Composer time such as 100ba, 1ep, 5000sp or 1000000tok"


def _time(pattern: re.Pattern[str]) -> Any:
    def check(value: str) -> str:
        if not pattern.match(value):
            raise Invalid(f"{_TIME_RULE}, got {value!r}")
        return value

    return AfterValidator(check)


Time = Annotated[str, _time(_TIME)]
"""A Composer time string: ``100ba``, ``1ep``, ``5000sp`` or ``1000000tok``."""
Duration = Annotated[str, _time(_DURATION)]
"""A Composer time string, or a fraction of the run (``0.5dur``)."""
Positive = Annotated[int, Field(gt=0)]

class ModelConfig(Section):
    """Which causal LM to train and how its attention runs."""

    pretrained_model_name_or_path: str | None = None
    """Hub id or local directory whose config (and, with ``pretrained``, weights) start the run."""
    pretrained: bool | None = None
    """Load the weights at ``pretrained_model_name_or_path`` (the default when it is set); false trains
    its architecture from scratch."""
    model_type: str | None = None
    """Architecture for a from-scratch model given only by config (``llama``, ``mistral``, ...)."""
    config_overrides: dict[str, Any] = Field(default_factory=dict)
    """Fields of the Hugging Face config to set (``num_hidden_layers``, ``hidden_size``, ...)."""
    attn_implementation: AttnImplementation = "packed"
    """``packed``: the varlen Triton kernel on CUDA (``sdpa_segments`` on CPU); ``flex``: FlexAttention
    with a document mask; ``sdpa_dense``: scaled-dot-product attention with a dense block-diagonal mask;
    ``sdpa_segments``: causal SDPA on each document in turn. (``sdpa``, the earlier name of
    ``sdpa_dense``, is still read.)"""

    @field_validator("attn_implementation", mode="before")
    @classmethod
    def _renamed(cls, value: Any) -> Any:
        if value == "sdpa":
            import warnings

            warnings.warn("model.attn_implementation: 'sdpa' is now called 'sdpa_dense'", FutureWarning, stacklevel=2)
            return "sdpa_dense"
        return value
    init_device: Literal["cpu", "meta"] = "cpu"
    """``meta`` builds the model without memory and lets FSDP materialize each shard on its GPU."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about a third more compute."""
    cross_entropy: Literal["auto", "fused", "chunked", "full"] = "auto"
    """How the LM head and loss run in training. ``chunked``: a few thousand tokens' logits at a time, with
    their gradients, never the whole tokens × vocab matrix (PyTorch, any device); ``fused``: the same in
    Liger-Kernel's Triton kernel (CUDA); ``auto``: fused on CUDA, chunked elsewhere; ``full``: Hugging
    Face's materialized logits. All give the same loss; evaluation always materializes the logits of a
    microbatch, which its metrics need."""
    cross_entropy_chunk_size: Positive = 2048
    """Tokens per chunk for ``chunked``: its logits buffer is chunk × vocab float32."""

    @model_validator(mode="after")
    def _weights(self) -> ModelConfig:
        if self.pretrained is None:
            self.pretrained = self.pretrained_model_name_or_path is not None
        elif self.pretrained and self.pretrained_model_name_or_path is None:
            raise Invalid("true needs model.pretrained_model_name_or_path (where the weights are)", "pretrained")
        return self


class TokenizerConfig(Section):
    """The tokenizer the shards were written with (checked against their ``ipt.json``)."""

    name: str | None = None
    """``mistral-v1`` (built in), a local directory or a hub id; default: the model's own."""


class StreamConfig(Section):
    """One MDS directory in the mix; ``proportion`` is its share of the samples drawn per epoch."""

    local: str | None = None
    """Directory of the shards (or their local cache when ``remote`` is set)."""
    remote: str | None = None
    """Object-store URL the shards are downloaded from (``s3://...``)."""
    proportion: Annotated[float, Field(gt=0)] | None = None
    """Share of every epoch's samples drawn from this stream; set on every stream or on none."""
    repeat: float | None = None
    """Upsample (> 1) or downsample (< 1) this stream instead of giving proportions."""


class LoaderConfig(Section):
    """A Streaming data loader over one or more MDS directories (``ipt convert`` or llm-foundry shards)."""

    streams: dict[str, StreamConfig] = Field(default_factory=dict)
    """Named MDS directories: ``{raw: {local: out/shards/raw, proportion: 0.5}, ...}``."""
    max_seq_len: Annotated[int, Field(ge=2)] | None = None
    """Row length N; default: the shards' ``max_seq_len`` from ``ipt.json``."""
    shuffle: bool = True
    shuffle_seed: int | None = None
    """Default: the run's ``seed``."""
    shuffle_algo: str = "py1e"
    num_canonical_nodes: int | None = None
    """Fix it (e.g. to the number of nodes of the first run) so that resuming on another node count
    replays the same sample order."""
    num_workers: int = 8
    prefetch_factor: int | None = 2
    persistent_workers: bool = True
    pin_memory: bool = True
    drop_last: bool = True
    predownload: int | None = None
    cache_limit: str | None = None
    download_timeout: float = 60.0

    @model_validator(mode="after")
    def _streams(self) -> LoaderConfig:
        if not self.streams:
            raise Invalid("give at least one stream (a name mapping to local and/or remote)", "streams")
        with_prop = [s for s, st in self.streams.items() if st.proportion is not None]
        if with_prop and len(with_prop) != len(self.streams):
            missing = next(s for s in self.streams if s not in with_prop)
            raise Invalid("set a proportion on every stream or on none", "streams", missing, "proportion")
        for name, st in self.streams.items():
            if st.local is None and st.remote is None:
                raise Invalid("give local, remote or both", "streams", name)
        return self


_STREAM_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class EvalConfig(Section):
    """Held-out loss while training: one Composer evaluator per stream, labelled with the stream's name.

    Each stream is read whole and in order, packed and document-masked as in training, and reports
    ``LanguageCrossEntropy`` (mean loss per predicted token) and ``LanguagePerplexity`` as
    ``metrics/<name>/...`` to the console and every logger. Typical streams are the held-out sides that
    ``ipt convert --split holdout=0.01`` writes beside the training shards (``OUT-holdout``).
    """

    streams: dict[str, str | StreamConfig] = Field(default_factory=dict)
    """Stream name -> MDS directory, as a path or as ``{local, remote}`` (no ``proportion``)."""
    interval: Time = "1ep"
    """How often to evaluate (``10ba``, ``1ep``); the end of training is always evaluated."""
    subset_num_batches: int = -1
    """Batches per stream and evaluation; -1: the whole stream."""
    device_batch_size: Positive | None = None
    """Rows per evaluation batch and device; default: ``device_eval_batch_size``, else the training one."""
    max_seq_len: Annotated[int, Field(ge=2)] | None = None
    """Row length; default: each stream's own (its ``ipt.json``)."""
    num_workers: Annotated[int, Field(ge=0)] = 0
    """Loader worker processes per stream (0: load in the training process)."""

    @model_validator(mode="after")
    def _streams(self) -> EvalConfig:
        if not self.streams:
            raise Invalid("give at least one stream (a name mapping to an MDS directory)", "streams")
        if self.subset_num_batches == 0 or self.subset_num_batches < -1:
            raise Invalid(f"must be -1 (all) or positive, got {self.subset_num_batches}", "subset_num_batches")
        for name, value in list(self.streams.items()):
            if not _STREAM_NAME.match(name):
                raise Invalid("a stream name holds only letters, digits, '_', '-' and '.' (it becomes the "
                              "metric key metrics/<name>/...)", "streams", name)
            st = StreamConfig(local=value) if isinstance(value, str) else value
            if st.local is None and st.remote is None:
                raise Invalid("give a path, or local, remote or both", "streams", name)
            if st.proportion is not None or st.repeat is not None:
                raise Invalid("proportion and repeat do not apply to an evaluation stream (each is read whole)",
                              "streams", name)
            self.streams[name] = st
        return self


class OptimizerConfig(Section):
    """The optimizer; ``decoupled_adamw`` scales weight decay with the learning rate, as llm-foundry does."""

    name: Literal["decoupled_adamw", "adamw"] = "decoupled_adamw"
    lr: Annotated[float, Field(gt=0)] = 6.0e-4
    """Peak learning rate, reached after ``scheduler.t_warmup``."""
    betas: list[float] = Field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1.0e-8
    weight_decay: Annotated[float, Field(ge=0)] = 0.0


class SchedulerConfig(Section):
    """The learning-rate schedule (Composer's schedulers)."""

    name: Literal["cosine_with_warmup", "linear_with_warmup", "constant_with_warmup"] = "cosine_with_warmup"
    t_warmup: Time = "0ba"
    """Warm-up length, a Composer time."""
    alpha_f: float = 0.1
    """Final learning rate as a fraction of ``optimizer.lr``."""


class SpeedMonitorConfig(Section):
    """Tokens/s and MFU."""

    window_size: Positive = 10
    """Batches averaged for tokens/s and MFU."""


class BatchLogConfig(Section):
    """Which samples each rank trained on, step by step (data-order audits, resume checks)."""

    folder: str
    """Directory of ``batches-rank{R}.jsonl``: one line per batch, ``{"step", "rows"}``, a row being the
    BLAKE2b-64 hex digest of its real (unpadded) token ids; appended across resumes."""


class CallbacksConfig(Section):
    """Composer callbacks; set one to ``null`` to turn it off."""

    speed_monitor: SpeedMonitorConfig | None = Field(default_factory=SpeedMonitorConfig)
    lr_monitor: dict[str, Any] | None = Field(default_factory=dict)
    memory_monitor: dict[str, Any] | None = Field(default_factory=dict)
    runtime_estimator: dict[str, Any] | None = None
    batch_log: BatchLogConfig | None = None


class JsonlLoggerConfig(Section):
    """Metrics as JSON lines, next to the checkpoints."""

    path: str = "metrics.jsonl"
    """One JSON object per logging call: ``{"step": ..., "metrics": {...}}``; appended across resumes."""


class LoggersConfig(Section):
    """Where metrics go. Third-party loggers take their Composer constructor arguments verbatim."""

    console_log_interval: Time = "1ba"
    """How often the console shows a line, a Composer time."""
    console: Literal["compact", "full"] = "compact"
    """``compact``: one line per interval (loss, lr, tokens/s, MFU) and one per evaluation; ``full``:
    Composer's console logger, every metric of every call (``ipt train --verbose``)."""
    progress_bar: bool | None = None
    """Composer's progress bar; default: on when stderr is a terminal (off in CI logs and files)."""
    jsonl: JsonlLoggerConfig | None = None
    wandb: dict[str, Any] | None = None
    mlflow: dict[str, Any] | None = None
    tensorboard: dict[str, Any] | None = None


class ExportConfig(Section):
    """The final model in Hugging Face format (``save_pretrained`` of model and tokenizer)."""

    hf_folder: str | None = None
    """Default: ``<save_folder>/huggingface`` when ``save_folder`` is set; nothing otherwise."""
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"


class TrainConfig(Section):
    """Everything ``ipt train`` needs; see ``examples/`` for complete files."""

    model: ModelConfig
    """The causal LM: a hub id or directory, or an architecture from scratch."""
    train_loader: LoaderConfig
    """The training data: MDS streams written by ``ipt convert``."""
    max_duration: Duration
    """Length of the run, a Composer time (``10ba``, ``1ep``, ``2000000000tok``)."""
    global_train_batch_size: Positive
    """Samples per optimizer step over all devices; must divide evenly over them."""
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    eval_loader: LoaderConfig | None = None
    """Held-out data evaluated every ``eval_interval`` (cross-entropy and perplexity)."""
    eval_interval: Time = "1ep"
    eval_subset_num_batches: int = -1
    """Batches per evaluation; -1: the whole eval loader."""
    device_train_microbatch_size: Positive | Literal["auto"] = 1
    """Samples per forward/backward on one device; ``auto`` lets Composer find the largest that fits."""
    device_eval_batch_size: Positive | None = None
    """Default: the per-device training batch size."""
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    precision: Literal["fp32", "amp_bf16", "amp_fp16"] = "amp_bf16"
    """``amp_*`` need a GPU; CPU runs use fp32."""
    device: Literal["auto", "cpu", "gpu"] = "auto"
    """``auto``: gpu when CUDA is available."""
    fsdp_config: dict[str, Any] | None = None
    """Composer ``FSDPConfig`` fields (``sharding_strategy``, ``mixed_precision``, ...)."""
    callbacks: CallbacksConfig = Field(default_factory=CallbacksConfig)
    loggers: LoggersConfig = Field(default_factory=LoggersConfig)
    save_folder: str | None = None
    """Where checkpoints go (a directory or an object-store URL; ``{run_name}`` is substituted)."""
    save_interval: Time = "1000ba"
    save_num_checkpoints_to_keep: int = -1
    """-1 keeps every checkpoint."""
    save_overwrite: bool = False
    load_path: str | None = None
    """A checkpoint to start from (``autoresume`` takes precedence when it finds one)."""
    load_weights_only: bool = False
    autoresume: bool = False
    """Continue from the latest checkpoint in ``save_folder``; needs a fixed ``run_name``."""
    run_name: str | None = None
    seed: int = 17
    dist_timeout: float = 600.0
    """Seconds a rank waits for the others (process-group set-up, collectives)."""
    export: ExportConfig = Field(default_factory=ExportConfig)
    eval: EvalConfig | None = None
    """Held-out loss per stream during training, one evaluator each (see :class:`EvalConfig`)."""

    @model_validator(mode="after")
    def _fits_together(self) -> TrainConfig:
        if self.eval is not None and self.eval_loader is not None and "eval" in self.eval.streams:
            raise Invalid("the name is taken by eval_loader's evaluator; rename the stream", "eval", "streams", "eval")
        m = self.model
        if m.pretrained_model_name_or_path is None and m.model_type is None:
            raise Invalid("set pretrained_model_name_or_path (hub id or directory) or model_type (e.g. llama)", "model")
        if self.model.cross_entropy == "fused" and self.device == "cpu":
            raise Invalid("fused needs a GPU (Liger-Kernel); use auto or chunked on CPU", "model", "cross_entropy")
        if self.autoresume:
            if not self.save_folder:
                raise Invalid("needs save_folder (where the checkpoints to resume from live)", "autoresume")
            if not self.run_name:
                raise Invalid("needs run_name (the same name on every restart)", "autoresume")
        if self.fsdp_config is not None:
            _check_fsdp_keys(self.fsdp_config)
        return self


def _check_fsdp_keys(fsdp: dict[str, Any]) -> None:
    """Unknown FSDP keys would otherwise fail deep inside Composer with a TypeError."""
    import dataclasses

    try:
        from composer.utils.parallelism import FSDPConfig
    except ImportError:  # config checks without the train env: Composer checks the keys itself later
        return
    known = {f.name for f in dataclasses.fields(FSDPConfig)}
    for key in fsdp:
        if key not in known:
            raise Invalid(f"unknown key (known keys here: {', '.join(sorted(known))})", "fsdp_config", key)


def check_batch_sizes(cfg: TrainConfig, world_size: int) -> int:
    """Return the per-device batch size; raise when the global batch does not split evenly."""
    if cfg.global_train_batch_size % world_size:
        raise UserError(
            f"global_train_batch_size: {cfg.global_train_batch_size} does not divide evenly over {world_size} devices"
        )
    per_device = cfg.global_train_batch_size // world_size
    mb = cfg.device_train_microbatch_size
    if isinstance(mb, int) and per_device % mb:
        raise UserError(
            f"device_train_microbatch_size: {mb} does not divide the per-device batch size {per_device} "
            f"(global_train_batch_size {cfg.global_train_batch_size} / {world_size} devices)"
        )
    return per_device


def check_local_paths(cfg: TrainConfig) -> None:
    """A stream with no remote must exist locally now, not after the job has queued for a node."""
    loaders: list[tuple[str, Any]] = [("train_loader", cfg.train_loader), ("eval_loader", cfg.eval_loader)]
    if cfg.eval is not None:
        loaders.append(("eval", cfg.eval))
    for name, loader in loaders:
        if loader is None:
            continue
        for sname, st in loader.streams.items():
            if st.remote is None and st.local is not None:
                index = Path(st.local) / "index.json"
                if not index.is_file():
                    raise UserError(
                        f"{name}.streams.{sname}.local: {st.local} has no index.json "
                        "(write shards there with `ipt convert`, or give a remote)"
                    )


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config, apply ``key=value`` overrides, and check it; every error is one line."""
    return load(TrainConfig, path, list(overrides or []))
