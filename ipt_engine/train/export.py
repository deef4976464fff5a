"""The trained model in Hugging Face format: ``save_pretrained`` of model and tokenizer.

Under FSDP every rank takes part in gathering the full state dict (the parameters are sharded); under
DDP or one process the replica on global rank 0 already holds every weight, so only it writes, and the
other ranks wait at a barrier so that none exits (and tears down the process group) mid-write. The
exported config names plain ``sdpa`` attention, so the directory loads anywhere, without ipt-engine:
packed attention is a training-time layout, not part of the model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def export_hf(
    trained: Any, hf_model: Any, tokenizer: Any, folder: str | Path, *, dtype: str = "bfloat16", sharded: bool = False
) -> Path | None:
    """Write ``folder`` (config, safetensors, tokenizer); return it on rank 0, None elsewhere.

    ``trained`` is the unwrapped Hugging Face module the trainer optimized (its submodules FSDP-wrapped
    when ``sharded``), from which the state dict is taken; ``hf_model`` is the plain Hugging Face model
    that writes config and files. Every rank must call this (collectives inside).
    """
    import torch
    from composer.utils import dist

    distributed = dist.is_initialized() and dist.get_world_size() > 1
    if distributed:
        dist.barrier()  # every rank has finished its last step before anything is read or written
    if distributed and sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(trained, options=options)
    elif dist.get_global_rank() == 0:
        state = {k: v.detach().cpu() for k, v in trained.state_dict().items()}
    if dist.get_global_rank() != 0:
        dist.barrier()
        return None
    target = getattr(torch, dtype)
    state = {k: v.to(target) if v.is_floating_point() else v for k, v in state.items()}
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    config = hf_model.config
    saved_attn = config._attn_implementation
    try:
        config._attn_implementation = "sdpa"
        config.torch_dtype = target
        hf_model.save_pretrained(out, state_dict=state, safe_serialization=True)
    finally:
        config._attn_implementation = saved_attn
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    log.info("exported the model in Hugging Face format to %s", out)
    if distributed:
        dist.barrier()
    return out
