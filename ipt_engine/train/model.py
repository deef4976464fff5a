"""Building the Hugging Face causal LM a run trains, with our attention and FSDP hooks in place.

A model comes either from ``pretrained_model_name_or_path`` (config, and weights unless
``pretrained: false``) or from ``model_type`` plus ``config_overrides`` (from scratch, no download). Its
attention is one of ours, registered with transformers (see :mod:`ipt_engine.train.attention`).

For FSDP, Composer looks on the HF module for ``fsdp_wrap_fn`` / ``activation_checkpointing_fn`` (wrap
each decoder layer) and, when the model was built on the meta device, ``param_init_fn`` to initialize
each shard where it lands.
"""

from __future__ import annotations

import logging
from typing import Any

from ipt_engine.errors import UserError
from ipt_engine.train.attention import REGISTERED, register_attention
from ipt_engine.train.config import ModelConfig

log = logging.getLogger(__name__)


def build_hf_config(cfg: ModelConfig, tokenizer: Any) -> Any:
    """The model's ``PretrainedConfig`` with overrides applied and special ids taken from the tokenizer."""
    from transformers import AutoConfig

    try:
        if cfg.pretrained_model_name_or_path is not None:
            config = AutoConfig.from_pretrained(cfg.pretrained_model_name_or_path)
        else:
            config = AutoConfig.for_model(cfg.model_type)
    except (OSError, ValueError, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        what = cfg.pretrained_model_name_or_path or cfg.model_type
        raise UserError(f"model: cannot load a config for {what!r}: {first}") from None
    for key, value in cfg.config_overrides.items():
        if not hasattr(config, key):
            raise UserError(f"model.config_overrides.{key}: {type(config).__name__} has no such field")
        setattr(config, key, value)
    from_scratch = cfg.pretrained_model_name_or_path is None
    if from_scratch and "vocab_size" not in cfg.config_overrides:
        config.vocab_size = len(tokenizer)
    if from_scratch:
        for attr, tok_attr in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"),
                               ("pad_token_id", "pad_token_id")):
            setattr(config, attr, getattr(tokenizer, tok_attr))
    if config.vocab_size < len(tokenizer):
        raise UserError(
            f"model: vocab_size {config.vocab_size} is smaller than the tokenizer's {len(tokenizer)} tokens"
        )
    return config


def decoder_layer_types(model: Any) -> tuple[type, ...]:
    """The classes FSDP wraps one by one: those HF marks as never to be split across devices."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    found = {type(m) for m in model.modules() if type(m).__name__ in names}
    if not found:
        raise UserError(f"model: cannot find decoder layers to shard in {type(model).__name__}")
    return tuple(found)


def _init_module(model: Any, module: Any) -> None:
    """Initialize one module materialized from the meta device (what ``from_config`` would have done)."""
    import torch

    with torch.no_grad():
        if hasattr(module, "rope_init_fn") and hasattr(module, "inv_freq"):
            # Rotary inv_freq is a non-persistent buffer: no checkpoint restores it, so recompute it.
            inv_freq, scaling = module.rope_init_fn(module.config, module.inv_freq.device)
            module.inv_freq.copy_(inv_freq)
            module.original_inv_freq = module.inv_freq
            module.attention_scaling = scaling
        model._init_weights(module)


def attach_fsdp_hooks(model: Any) -> None:
    """Tell Composer's FSDP how to wrap, checkpoint and (from meta) initialize this model."""
    layers = decoder_layer_types(model)
    model.fsdp_wrap_fn = lambda module: isinstance(module, layers)
    model.activation_checkpointing_fn = lambda module: isinstance(module, layers)
    model.param_init_fn = lambda module: _init_module(model, module)


# Config fields that make a model's logits more than ``hidden @ W_headᵀ`` (soft-capping, scaling): the
# loss without logits would silently drop them, so such models train with ``full``.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_logits_scale")


def lm_loss_unsupported(model: Any) -> str | None:
    """Why ``model``'s LM head cannot run as a loss without logits, or None when it can."""
    import torch

    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear) or head.bias is not None:
        return f"its output layer is {type(head).__name__}{' with a bias' if head is not None else ''}, not a bias-free Linear"
    if not callable(getattr(model, "get_decoder", None)):
        return "it has no get_decoder()"
    for name in _LOGIT_TRANSFORMS:
        if getattr(model.config, name, None) not in (None, 1.0):
            return f"its config transforms the logits ({name}={getattr(model.config, name)})"
    return None


def _lm_loss_forward(self: Any, input_ids: Any = None, position_ids: Any = None, labels: Any = None,
                     **kwargs: Any) -> Any:
    """A causal LM's forward whose loss never materializes the logits (bound onto the model instance).

    It runs inside the model's own ``forward``, so wrappers that act around it (FSDP gathering the head
    and embedding weights, DDP) see an ordinary call. Without ``labels`` (evaluation, generation) it is
    the class's own forward, logits and all.
    """
    from transformers.modeling_outputs import CausalLMOutputWithPast

    from ipt_engine.train.loss import causal_lm_loss

    if labels is None:
        return type(self).forward(self, input_ids=input_ids, position_ids=position_ids, **kwargs)
    out = self.get_decoder()(input_ids=input_ids, position_ids=position_ids, **kwargs)
    mode, chunk_size = self.ipt_cross_entropy
    loss = causal_lm_loss(out.last_hidden_state, self.get_output_embeddings().weight, labels,
                          mode=mode, chunk_size=chunk_size)
    return CausalLMOutputWithPast(loss=loss)


def attach_lm_loss(model: Any, cross_entropy: str, chunk_size: int = 2048) -> str:
    """Make ``model``'s training forward compute its loss as ``cross_entropy`` says; return the mode set.

    ``full`` leaves the model as it is. ``auto`` on a model whose logits are more than a bias-free linear
    head falls back to ``full`` (logged); ``chunked`` or ``fused`` there is a user error.
    """
    import types

    if cross_entropy == "full":
        model.__dict__.pop("forward", None)
        return "full"
    why = lm_loss_unsupported(model)
    if why is not None:
        if cross_entropy != "auto":
            raise UserError(f"model.cross_entropy: {cross_entropy} cannot train {type(model).__name__}: {why}; use full")
        log.info("model.cross_entropy: auto uses full logits for %s: %s", type(model).__name__, why)
        return "full"
    model.ipt_cross_entropy = (cross_entropy, chunk_size)
    # An instance attribute, so copies of the model (deepcopy rebinds bound methods) keep it.
    model.forward = types.MethodType(_lm_loss_forward, model)
    return cross_entropy


def build_hf_model(cfg: ModelConfig, tokenizer: Any, *, seed: int = 17) -> Any:
    """Build the causal LM (float32 master weights; Composer's precision setting casts the math)."""
    import torch
    from transformers import AutoModelForCausalLM

    register_attention()
    config = build_hf_config(cfg, tokenizer)
    attn = REGISTERED[cfg.attn_implementation]
    if cfg.pretrained:
        if cfg.init_device == "meta":
            raise UserError("model.init_device: meta builds an uninitialized model; it needs pretrained: false")
        try:
            model = AutoModelForCausalLM.from_pretrained(
                cfg.pretrained_model_name_or_path, config=config, attn_implementation=attn, torch_dtype=torch.float32
            )
        except (OSError, ValueError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise UserError(f"model.pretrained_model_name_or_path: cannot load weights: {first}") from None
    else:
        device = torch.device("meta") if cfg.init_device == "meta" else torch.device("cpu")
        with torch.random.fork_rng(devices=[]), device:
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(config, attn_implementation=attn, torch_dtype=torch.float32)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    attach_fsdp_hooks(model)
    return model
