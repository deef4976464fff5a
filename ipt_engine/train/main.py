"""The training entry: config in, Composer ``Trainer.fit`` out, then the Hugging Face export.

Kept short on purpose: each piece (tokenizer and shard checks, data, model, optimizer, callbacks,
loggers, export) is built by its own module; this one only orders them. Order matters in two places:
the distributed process group exists before any dataset (Streaming coordinates ranks through it), and
every cheap check (config, batch sizes, paths, tokenizer against shards) runs before the model is built.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ipt_engine.errors import UserError
from ipt_engine.train.config import TrainConfig, check_batch_sizes, check_local_paths

log = logging.getLogger(__name__)


def real_tokens(batch: dict[str, Any]) -> dict[str, int]:
    """Token counts of a batch, as Composer's ``DataSpec`` asks for them.

    ``total``: tokens that are data (not padding), what tokens/s and token-based durations count.
    ``loss_generating``: positions with a label (a document's last token predicts nothing), what the
    loss of a microbatch is averaged over. Composer weights each microbatch by the latter
    (``accumulate_train_batch_on_tokens``), so a step's loss and gradient are the mean over every label
    of the global batch, whatever the split into ranks and microbatches: two ranks × 2 samples give the
    same step as one process × 2 microbatches of 2.
    """
    return {"total": int(batch["doc_lens"].sum()), "loss_generating": int((batch["labels"] != -100).sum())}


def _device(cfg: TrainConfig) -> str:
    import torch

    if cfg.device == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if cfg.device == "gpu" and not torch.cuda.is_available():
        raise UserError("device: gpu requested but CUDA is not available")
    return cfg.device


def _tokenizer_name(cfg: TrainConfig) -> str:
    name = cfg.tokenizer.name or cfg.model.pretrained_model_name_or_path
    if name is None:
        raise UserError("tokenizer.name: required when the model is given by model_type (e.g. mistral-v1)")
    return name


def export_folder(cfg: TrainConfig) -> str | None:
    folder = cfg.export.hf_folder
    if folder is None and cfg.save_folder is not None:
        folder = f"{cfg.save_folder.rstrip('/')}/huggingface"
    if folder is None or "://" in folder:
        return folder
    return folder.replace("{run_name}", cfg.run_name or "run")


def train(cfg: TrainConfig, *, extra_callbacks: Sequence[Any] = ()) -> Any:
    """Run training as ``cfg`` says; return the finished Composer ``Trainer``."""
    from composer import DataSpec, Evaluator, Trainer
    from composer.utils import dist, get_device, reproducibility

    from ipt_engine.data.tokenizer_info import load_tokenizer, tokenizer_fingerprint
    from ipt_engine.train.callbacks import build_callbacks
    from ipt_engine.train.composer_model import build_composer_model
    from ipt_engine.train.data import build_dataloader, plan_loader
    from ipt_engine.train.export import export_hf
    from ipt_engine.train.loggers import build_loggers
    from ipt_engine.train.model import build_hf_model
    from ipt_engine.train.optim import build_optimizer, build_scheduler

    device = _device(cfg)
    if device == "cpu" and cfg.precision != "fp32":
        raise UserError(f"precision: {cfg.precision} needs a GPU; use fp32 on CPU")
    if cfg.fsdp_config is not None and device == "cpu":
        raise UserError("fsdp_config: FSDP needs GPUs; remove it for a CPU run")
    dist.initialize_dist(get_device(device), timeout=cfg.dist_timeout)
    per_device = check_batch_sizes(cfg, dist.get_world_size())
    check_local_paths(cfg)
    reproducibility.seed_all(cfg.seed)

    tokenizer = load_tokenizer(_tokenizer_name(cfg))
    fingerprint = tokenizer_fingerprint(tokenizer)
    train_plan = plan_loader(cfg.train_loader, "train_loader", fingerprint)
    eval_plan = plan_loader(cfg.eval_loader, "eval_loader", fingerprint) if cfg.eval_loader else None

    hf_model = build_hf_model(cfg.model, tokenizer, seed=cfg.seed)
    model = build_composer_model(hf_model, tokenizer, cfg.model.attn_implementation, cfg.model.cross_entropy,
                                 cfg.model.cross_entropy_chunk_size)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    loader_args = dict(seed=cfg.seed, eos_id=tokenizer.eos_token_id, pad_id=pad_id, vocab_size=len(tokenizer))
    # A run killed by SIGKILL leaves Streaming's shared-memory segments behind, and a later run on the
    # node can collide with them while registering its own; one job per node owns them, so its local
    # rank 0 clears the stale ones first.
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()
    train_dl = build_dataloader(train_plan, device_batch_size=per_device, **loader_args)
    evaluators = []
    if eval_plan is not None:
        eval_dl = build_dataloader(eval_plan, device_batch_size=cfg.device_eval_batch_size or per_device, **loader_args)
        evaluators.append(Evaluator(label="eval", dataloader=DataSpec(eval_dl, get_num_tokens_in_batch=real_tokens),
                                    metric_names=["LanguageCrossEntropy", "LanguagePerplexity"]))
    if cfg.eval is not None:
        from ipt_engine.train.evaluation import build_stream_evaluators

        evaluators += build_stream_evaluators(cfg.eval, tokenizer_fp=fingerprint,
                                              device_batch_size=cfg.device_eval_batch_size or per_device,
                                              loader_args=loader_args, num_tokens=real_tokens)

    optimizer = build_optimizer(cfg.optimizer, model)
    loggers = build_loggers(cfg.loggers, cfg.run_name)
    progress_bar = cfg.loggers.progress_bar
    if progress_bar is None:
        progress_bar = sys.stderr.isatty()
    if cfg.loggers.console == "compact":
        from ipt_engine.train.console import build_compact_console_logger

        loggers.append(build_compact_console_logger(cfg.loggers.console_log_interval))
    else:
        progress_bar = False  # Composer's full console logger and its progress bar exclude each other
    trainer = Trainer(
        run_name=cfg.run_name,
        model=model,
        train_dataloader=DataSpec(train_dl, get_num_tokens_in_batch=real_tokens),
        eval_dataloader=evaluators or None,
        eval_interval=cfg.eval_interval,
        eval_subset_num_batches=cfg.eval_subset_num_batches,
        max_duration=cfg.max_duration,
        optimizers=optimizer,
        schedulers=build_scheduler(cfg.scheduler),
        device=device,
        device_train_microbatch_size=cfg.device_train_microbatch_size,
        accumulate_train_batch_on_tokens=True,
        precision=cfg.precision,
        parallelism_config={"fsdp": cfg.fsdp_config} if cfg.fsdp_config is not None else None,
        callbacks=[*build_callbacks(cfg.callbacks, on_gpu=device == "gpu"), *extra_callbacks],
        loggers=loggers,
        progress_bar=progress_bar,
        log_to_console=cfg.loggers.console == "full",
        console_log_interval=cfg.loggers.console_log_interval,
        save_folder=cfg.save_folder,
        save_interval=cfg.save_interval,
        save_num_checkpoints_to_keep=cfg.save_num_checkpoints_to_keep,
        save_overwrite=cfg.save_overwrite,
        load_path=cfg.load_path,
        load_weights_only=cfg.load_weights_only,
        autoresume=cfg.autoresume,
        seed=cfg.seed,
        dist_timeout=cfg.dist_timeout,
    )
    trainer.logger.log_hyperparameters({"config": cfg.model_dump(mode="json")})
    folder = export_folder(cfg)
    done = already_trained(trainer.state)
    if done is not None:
        # Composer would raise a ValueError with a traceback; a finished run asked again is not an error.
        if dist.get_global_rank() == 0:
            print(f"ipt train: already trained to {done} (checkpoint {latest_checkpoint(cfg)}); "
                  "raise max_duration to continue", file=sys.stderr)
        if folder is None or export_exists(folder):
            return trainer
    else:
        trainer.fit()

    if folder is not None:
        export_hf(unwrap(trainer.state.model).model, hf_model, tokenizer, folder,
                  dtype=cfg.export.dtype, sharded=cfg.fsdp_config is not None)
    return trainer


def unwrap(model: Any) -> Any:
    """The ComposerModel inside ``state.model``: under DDP Composer holds the ``DistributedDataParallel``
    wrapper there (FSDP wraps submodules in place, so the ComposerModel stays on top)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def already_trained(state: Any) -> str | None:
    """``max_duration`` as text when the resumed timestamp has reached it (the run has nothing left)."""
    limit = state.max_duration
    if limit is None:
        return None
    try:
        elapsed = state.timestamp.get(limit.unit)
    except (ValueError, KeyError):  # a unit the timestamp does not count (``dur``): let Composer decide
        return None
    return str(limit) if elapsed >= limit else None


def latest_checkpoint(cfg: TrainConfig) -> str:
    """Where autoresume found the state: the checkpoint Composer's ``latest-rank0.pt`` link points to."""
    if not cfg.save_folder or "://" in cfg.save_folder:
        return cfg.load_path or str(cfg.save_folder)
    link = Path(cfg.save_folder.replace("{run_name}", cfg.run_name or "run")) / "latest-rank0.pt"
    return str(link.resolve()) if link.exists() else cfg.load_path or str(link)


def export_exists(folder: str) -> bool:
    """A finished export: config and weights written (a run killed mid-export has neither both)."""
    if "://" in folder:
        return False
    out = Path(folder)
    return (out / "config.json").is_file() and any(out.glob("*.safetensors"))


def log_to_console() -> None:
    """Training's INFO lines (resume, export, evaluation) on the console, timestamped."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str]) -> int:
    """``CONFIG.yaml [key=value ...]``: what ``ipt train`` and ``python -m ipt_engine.train`` run."""
    from ipt_engine.train.config import load_config

    if not argv or argv[0] in ("-h", "--help"):
        raise UserError("usage: CONFIG.yaml [key=value ...]")
    log_to_console()
    cfg = load_config(argv[0], list(argv[1:]))
    train(cfg)
    return 0
