"""The trained model in Hugging Face format: ``save_pretrained`` of model and tokenizer.

Every rank takes part in gathering the full state dict (FSDP shards it); global rank 0 writes. The
exported config names plain ``sdpa`` attention, so the directory loads anywhere, without ipt-engine:
packed attention is a training-time layout, not part of the model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def export_hf(trained: Any, hf_model: Any, tokenizer: Any, folder: str | Path, *, dtype: str = "bfloat16") -> Path | None:
    """Write ``folder`` (config, safetensors, tokenizer); return it on rank 0, None elsewhere.

    ``trained`` is the module as the trainer holds it (FSDP-wrapped under FSDP), from which the full
    state dict is gathered; ``hf_model`` is the plain Hugging Face model that writes config and files.
    """
    import torch
    from composer.utils import dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    distributed = dist.is_initialized() and dist.get_world_size() > 1
    if distributed:
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(trained, options=options)
    else:
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
