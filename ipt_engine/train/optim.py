"""Optimizer and learning-rate schedule from their config sections."""

from __future__ import annotations

from typing import Any

from ipt_engine.train.config import OptimizerConfig, SchedulerConfig


def build_optimizer(cfg: OptimizerConfig, model: Any) -> Any:
    import torch
    from composer.optim import DecoupledAdamW

    kwargs = dict(lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.name == "decoupled_adamw":
        # Weight decay not scaled by the learning rate, so it does not shrink with the schedule.
        return DecoupledAdamW(model.parameters(), **kwargs)
    return torch.optim.AdamW(model.parameters(), **kwargs)


def build_scheduler(cfg: SchedulerConfig) -> Any:
    from composer.optim import (
        ConstantWithWarmupScheduler,
        CosineAnnealingWithWarmupScheduler,
        LinearWithWarmupScheduler,
    )

    if cfg.name == "cosine_with_warmup":
        return CosineAnnealingWithWarmupScheduler(t_warmup=cfg.t_warmup, alpha_f=cfg.alpha_f)
    if cfg.name == "linear_with_warmup":
        return LinearWithWarmupScheduler(t_warmup=cfg.t_warmup, alpha_f=cfg.alpha_f)
    return ConstantWithWarmupScheduler(t_warmup=cfg.t_warmup)
