"""Document-masked attention plugged into Hugging Face models through ``AttentionInterface``.

Registering a function under a new name and setting ``config._attn_implementation`` to it makes every
attention layer of any HF model that supports the interface (Llama, Mistral, Qwen2, ...) call it with
``query`` ``[B, Hq, N, D]`` and ``key``/``value`` ``[B, Hkv, N, D]`` after RoPE. We flatten the batch to
``(B*N, heads, D)`` and hand it, with the packed metadata the wrapper built from ``doc_lens``, to the
kernel backends. Because transformers has no mask function for our names, it builds no dense
``[B, 1, N, N]`` mask at all; the documents' boundaries travel only as ``cu_seqlens``.

Called without packed metadata (generation, a user's own forward), the function falls back to plain
causal SDPA, which is the right thing for one unpacked sequence per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# attn_implementation (ipt_engine.kernels.backends' names) -> the name registered with transformers
REGISTERED = {impl: f"ipt_{impl}" for impl in ("packed", "flex", "sdpa_dense", "sdpa_segments")}
CONTEXT_KWARG = "ipt_attention"


@dataclass
class PackedAttentionContext:
    """Per-batch attention inputs, built once in the model wrapper and shared by every layer."""

    meta: Any
    """:class:`ipt_engine.kernels.metadata.PackedMetadata` of the batch."""
    backend: str
    """``ipt_engine.kernels.backends`` name."""
    block_mask: Any = None
    """FlexAttention BlockMask (``flex``), built once instead of once per layer."""
    dense_mask: Any = None
    """``[total, total]`` bool mask (``sdpa_dense``), built once instead of once per layer."""


def build_context(impl: str, meta: Any, device_type: str) -> PackedAttentionContext:
    """Everything the layers need for one batch, including masks that would be wasteful to rebuild."""
    backend = kernel_backend(impl, device_type)
    ctx = PackedAttentionContext(meta, backend)
    total = meta.total_tokens
    if backend == "flex":
        from ipt_engine.kernels.reference import flex_block_mask

        ctx.block_mask = flex_block_mask(meta.cu_seqlens, total)
    elif backend == "sdpa_dense":
        from ipt_engine.kernels.reference import dense_document_mask

        ctx.dense_mask = dense_document_mask(meta.cu_seqlens, total)
    return ctx


def kernel_backend(impl: str, device_type: str) -> str:
    """The ``ipt_engine.kernels.backends`` name behind a config's ``attn_implementation`` on a device."""
    if impl == "packed":
        # The Triton kernel runs on CPU only under the interpreter (seconds per tile), so CPU runs use
        # the same math as SDPA per document (no mask, no cross-document pairs).
        return "packed" if device_type == "cuda" else "sdpa_segments"
    return impl


def _make_forward(impl: str):
    def attention_forward(
        module: Any, query: Any, key: Any, value: Any, attention_mask: Any, scaling: float | None = None,
        dropout: float = 0.0, **kwargs: Any,
    ) -> tuple[Any, None]:
        ctx: PackedAttentionContext | None = kwargs.get(CONTEXT_KWARG)
        if ctx is None:
            from transformers.integrations.sdpa_attention import sdpa_attention_forward

            return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                          dropout=dropout, is_causal=True)
        if dropout and module.training:
            raise NotImplementedError("attention dropout is not supported with packed attention; set it to 0")
        b, hq, n, d = query.shape
        hkv = key.shape[1]
        q = query.transpose(1, 2).reshape(b * n, hq, d)
        k = key.transpose(1, 2).reshape(b * n, hkv, d)
        v = value.transpose(1, 2).reshape(b * n, hkv, d)
        if ctx.dense_mask is not None:
            from ipt_engine.kernels.reference import sdpa_dense_attention

            out = sdpa_dense_attention(q, k, v, ctx.meta.cu_seqlens, scaling, True, mask=ctx.dense_mask)
        else:
            from ipt_engine.kernels.backends import attention

            out = attention(q, k, v, ctx.meta, backend=ctx.backend, softmax_scale=scaling, block_mask=ctx.block_mask)
        return out.reshape(b, n, hq, d), None

    attention_forward.__name__ = f"{REGISTERED[impl]}_attention_forward"
    return attention_forward


def register_attention() -> None:
    """Register our three implementations with transformers (idempotent)."""
    from transformers import AttentionInterface

    for impl, name in REGISTERED.items():
        AttentionInterface.register(name, _make_forward(impl))
