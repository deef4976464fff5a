"""The training config: nested dataclasses, one per section of the YAML file.

Field names follow llm-foundry where the idea is the same (``global_train_batch_size``,
``device_train_microbatch_size``, ``max_duration``, ``save_interval``, ``autoresume``, streams with
``local`` / ``remote`` / ``proportion``), so a user moving from it recognizes the file. Durations are
Composer time strings (``10ba``, ``1ep``, ``2000000000tok``). Everything is checked when the file is
loaded (:func:`load_config`), before any process touches a GPU.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ipt_engine.errors import UserError
from ipt_engine.train.structured import apply_overrides, from_dict, load_yaml

AttnImplementation = Literal["packed", "flex", "sdpa"]
_TIME = re.compile(r"^\d+(ep|ba|sp|tok)$")
_DURATION = re.compile(r"^(\d+(ep|ba|sp|tok)|(0?\.\d+|1(\.0*)?)dur)$")


@dataclass
class ModelConfig:
    """Which causal LM to train and how its attention runs."""

    pretrained_model_name_or_path: str | None = None
    """Hub id or local directory whose config (and, with ``pretrained``, weights) start the run."""
    pretrained: bool | None = None
    """Load the weights at ``pretrained_model_name_or_path`` (the default when it is set); false trains
    its architecture from scratch."""
    model_type: str | None = None
    """Architecture for a from-scratch model given only by config (``llama``, ``mistral``, ...)."""
    config_overrides: dict[str, Any] = field(default_factory=dict)
    """Fields of the Hugging Face config to set (``num_hidden_layers``, ``hidden_size``, ...)."""
    attn_implementation: AttnImplementation = "packed"
    """``packed``: the varlen Triton kernel on CUDA (PyTorch reference on CPU); ``flex``: FlexAttention
    with a document mask; ``sdpa``: scaled-dot-product attention with a dense block-diagonal mask."""
    init_device: Literal["cpu", "meta"] = "cpu"
    """``meta`` builds the model without memory and lets FSDP materialize each shard on its GPU."""
    gradient_checkpointing: bool = False
    cross_entropy: Literal["auto", "fused", "chunked", "full"] = "auto"
    """How the LM head and loss run in training. ``chunked``: a few thousand tokens' logits at a time, with
    their gradients, never the whole tokens × vocab matrix (PyTorch, any device); ``fused``: the same in
    Liger-Kernel's Triton kernel (CUDA); ``auto``: fused on CUDA, chunked elsewhere; ``full``: Hugging
    Face's materialized logits. All give the same loss; evaluation always materializes the logits of a
    microbatch, which its metrics need."""
    cross_entropy_chunk_size: int = 2048
    """Tokens per chunk for ``chunked``: its logits buffer is chunk × vocab float32."""


@dataclass
class TokenizerConfig:
    name: str | None = None
    """``mistral-v1`` (built in), a local directory or a hub id; default: the model's own."""


@dataclass
class StreamConfig:
    """One MDS directory in the mix; ``proportion`` is its share of the samples drawn per epoch."""

    local: str | None = None
    remote: str | None = None
    proportion: float | None = None
    repeat: float | None = None


@dataclass
class LoaderConfig:
    """A Streaming data loader over one or more MDS directories (``ipt convert`` or llm-foundry shards)."""

    streams: dict[str, StreamConfig] = field(default_factory=dict)
    max_seq_len: int | None = None
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


@dataclass
class OptimizerConfig:
    name: Literal["decoupled_adamw", "adamw"] = "decoupled_adamw"
    lr: float = 6.0e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1.0e-8
    weight_decay: float = 0.0


@dataclass
class SchedulerConfig:
    name: Literal["cosine_with_warmup", "linear_with_warmup", "constant_with_warmup"] = "cosine_with_warmup"
    t_warmup: str = "0ba"
    alpha_f: float = 0.1
    """Final learning rate as a fraction of ``optimizer.lr``."""


@dataclass
class SpeedMonitorConfig:
    window_size: int = 10
    """Batches averaged for tokens/s and MFU."""


@dataclass
class CallbacksConfig:
    """Composer callbacks; set one to ``null`` to turn it off."""

    speed_monitor: SpeedMonitorConfig | None = field(default_factory=SpeedMonitorConfig)
    lr_monitor: dict[str, Any] | None = field(default_factory=dict)
    memory_monitor: dict[str, Any] | None = field(default_factory=dict)
    runtime_estimator: dict[str, Any] | None = None


@dataclass
class JsonlLoggerConfig:
    path: str = "metrics.jsonl"
    """One JSON object per logging call: ``{"step": ..., "metrics": {...}}``; appended across resumes."""


@dataclass
class LoggersConfig:
    """Where metrics go. Third-party loggers take their Composer constructor arguments verbatim."""

    console_log_interval: str = "1ba"
    console: Literal["compact", "full"] = "compact"
    """``compact``: one line per interval (loss, lr, tokens/s, MFU) and one per evaluation; ``full``:
    Composer's console logger, every metric of every call (``ipt train --verbose``)."""
    progress_bar: bool | None = None
    """Composer's progress bar; default: on when stderr is a terminal (off in CI logs and files)."""
    jsonl: JsonlLoggerConfig | None = None
    wandb: dict[str, Any] | None = None
    mlflow: dict[str, Any] | None = None
    tensorboard: dict[str, Any] | None = None


@dataclass
class ExportConfig:
    """The final model in Hugging Face format (``save_pretrained`` of model and tokenizer)."""

    hf_folder: str | None = None
    """Default: ``<save_folder>/huggingface`` when ``save_folder`` is set; nothing otherwise."""
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"


@dataclass
class TrainConfig:
    """Everything ``ipt train`` needs; see ``examples/`` for complete files."""

    model: ModelConfig
    train_loader: LoaderConfig
    max_duration: str
    global_train_batch_size: int
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    eval_loader: LoaderConfig | None = None
    eval_interval: str = "1ep"
    eval_subset_num_batches: int = -1
    device_train_microbatch_size: int | Literal["auto"] = 1
    device_eval_batch_size: int | None = None
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    precision: Literal["fp32", "amp_bf16", "amp_fp16"] = "amp_bf16"
    device: Literal["auto", "cpu", "gpu"] = "auto"
    fsdp_config: dict[str, Any] | None = None
    """Composer ``FSDPConfig`` fields (``sharding_strategy``, ``mixed_precision``, ...)."""
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    loggers: LoggersConfig = field(default_factory=LoggersConfig)
    save_folder: str | None = None
    save_interval: str = "1000ba"
    save_num_checkpoints_to_keep: int = -1
    save_overwrite: bool = False
    load_path: str | None = None
    load_weights_only: bool = False
    autoresume: bool = False
    run_name: str | None = None
    seed: int = 17
    dist_timeout: float = 600.0
    export: ExportConfig = field(default_factory=ExportConfig)


def _check_time(value: str, key: str, pattern: re.Pattern[str] = _TIME) -> None:
    if not pattern.match(value):
        raise UserError(f"{key}: expected a Composer time such as 100ba, 1ep, 5000sp or 1000000tok, got {value!r}")


def check_static(cfg: TrainConfig) -> TrainConfig:
    """Checks that need no environment: shapes of values and how sections fit together."""
    m = cfg.model
    if m.pretrained_model_name_or_path is None and m.model_type is None:
        raise UserError("model: set pretrained_model_name_or_path (hub id or directory) or model_type (e.g. llama)")
    if m.pretrained is None:
        m.pretrained = m.pretrained_model_name_or_path is not None
    elif m.pretrained and m.pretrained_model_name_or_path is None:
        raise UserError("model.pretrained: true needs model.pretrained_model_name_or_path (where the weights are)")
    if m.cross_entropy_chunk_size <= 0:
        raise UserError(f"model.cross_entropy_chunk_size: must be positive, got {m.cross_entropy_chunk_size}")
    if m.cross_entropy == "fused" and cfg.device == "cpu":
        raise UserError("model.cross_entropy: fused needs a GPU (Liger-Kernel); use auto or chunked on CPU")
    _check_time(cfg.max_duration, "max_duration", _DURATION)
    _check_time(cfg.save_interval, "save_interval")
    _check_time(cfg.eval_interval, "eval_interval")
    _check_time(cfg.scheduler.t_warmup, "scheduler.t_warmup")
    _check_time(cfg.loggers.console_log_interval, "loggers.console_log_interval")
    if cfg.global_train_batch_size <= 0:
        raise UserError(f"global_train_batch_size: must be positive, got {cfg.global_train_batch_size}")
    mb = cfg.device_train_microbatch_size
    if isinstance(mb, int) and mb <= 0:
        raise UserError(f"device_train_microbatch_size: must be positive or 'auto', got {mb}")
    for name, loader in (("train_loader", cfg.train_loader), ("eval_loader", cfg.eval_loader)):
        if loader is None:
            continue
        if not loader.streams:
            raise UserError(f"{name}.streams: give at least one stream (a name mapping to local and/or remote)")
        with_prop = [s for s, st in loader.streams.items() if st.proportion is not None]
        if with_prop and len(with_prop) != len(loader.streams):
            missing = next(s for s in loader.streams if s not in with_prop)
            raise UserError(f"{name}.streams.{missing}.proportion: set a proportion on every stream or on none")
        for sname, st in loader.streams.items():
            if st.local is None and st.remote is None:
                raise UserError(f"{name}.streams.{sname}: give local, remote or both")
            if st.proportion is not None and st.proportion <= 0:
                raise UserError(f"{name}.streams.{sname}.proportion: must be positive, got {st.proportion}")
        if loader.max_seq_len is not None and loader.max_seq_len < 2:
            raise UserError(f"{name}.max_seq_len: must be at least 2, got {loader.max_seq_len}")
    if cfg.autoresume:
        if not cfg.save_folder:
            raise UserError("autoresume: needs save_folder (where the checkpoints to resume from live)")
        if not cfg.run_name:
            raise UserError("autoresume: needs run_name (the same name on every restart)")
    if cfg.fsdp_config is not None:
        _check_fsdp_keys(cfg.fsdp_config)
    return cfg


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
            raise UserError(f"fsdp_config.{key}: unknown key (known keys here: {', '.join(sorted(known))})")


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
    for name, loader in (("train_loader", cfg.train_loader), ("eval_loader", cfg.eval_loader)):
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
    raw = apply_overrides(load_yaml(path), list(overrides or []))
    cfg = from_dict(TrainConfig, raw)
    return check_static(cfg)
