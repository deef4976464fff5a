"""One entry point for document-masked attention, picking the implementation by name.

Every backend takes the varlen layout (``q`` ``(total, Hq, D)``, ``k``/``v`` ``(total, Hkv, D)``) and
either a :class:`~ipt_engine.kernels.metadata.PackedMetadata` or a ``cu_seqlens`` tensor:

* ``"packed"`` - our Triton kernels (:func:`ipt_engine.kernels.packed_attention`);
* ``"flex"`` - FlexAttention with a document BlockMask (compiled on CUDA, eager on CPU);
* ``"sdpa_dense"`` - SDPA with a dense ``[total, total]`` mask;
* ``"sdpa_segments"`` - SDPA (causal) on each document in turn, in the input dtype: what ``packed``
  means on a CPU, where the Triton kernels do not run; no mask is materialized and no cross-document
  pair is computed;
* ``"reference"`` - the per-document float64 loop (slow; ground truth).
"""

from __future__ import annotations

from typing import Literal

import torch

from .metadata import PackedMetadata
from .reference import flex_attention_backend, reference_attention, sdpa_dense_attention

Backend = Literal["packed", "flex", "sdpa_dense", "sdpa_segments", "reference"]
BACKENDS: tuple[str, ...] = ("packed", "flex", "sdpa_dense", "sdpa_segments", "reference")


def sdpa_segments_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                            softmax_scale: float | None = None, causal: bool = True) -> torch.Tensor:
    """Causal SDPA per segment of ``cu_seqlens``; ``(total, Hq, D)`` in ``q.dtype``, differentiable.

    One host read of the boundaries per call; each segment is a ``(1, H, L, D)`` view, so the cost is
    the sum of the documents' own attention, as in the varlen kernels.
    """
    import torch.nn.functional as F

    groups = q.shape[1] // k.shape[1]
    bounds = cu_seqlens.tolist()
    outs = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end == start:
            continue
        qd, kd, vd = (x[start:end].transpose(0, 1).unsqueeze(0) for x in (q, k, v))
        if groups > 1:  # repeated here: SDPA's enable_gqa falls back to the math kernel on CPU (2.5x slower)
            kd, vd = kd.repeat_interleave(groups, dim=1), vd.repeat_interleave(groups, dim=1)
        out = F.scaled_dot_product_attention(qd, kd, vd, is_causal=causal, scale=softmax_scale)
        outs.append(out[0].transpose(0, 1))
    if not outs:
        return q.new_empty(q.shape)
    return torch.cat(outs, dim=0)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    meta_or_cu_seqlens: PackedMetadata | torch.Tensor,
    *,
    backend: Backend = "packed",
    max_seqlen: int | None = None,
    softmax_scale: float | None = None,
    causal: bool = True,
    deterministic: bool = False,
    block_mask=None,
) -> torch.Tensor:
    """Document-masked attention by ``backend``; returns ``(total, Hq, D)`` in ``q.dtype``.

    ``deterministic`` applies to ``"packed"`` only (the others are deterministic or not by their own
    rules); ``block_mask`` lets ``"flex"`` reuse a BlockMask built once per batch.
    """
    if isinstance(meta_or_cu_seqlens, PackedMetadata):
        cu_seqlens = meta_or_cu_seqlens.cu_seqlens
        max_seqlen = meta_or_cu_seqlens.max_seqlen if max_seqlen is None else max_seqlen
    else:
        cu_seqlens = meta_or_cu_seqlens
    if backend == "packed":
        from .packed_attention import packed_attention

        return packed_attention(q, k, v, cu_seqlens, max_seqlen=max_seqlen, softmax_scale=softmax_scale,
                                causal=causal, deterministic=deterministic)
    if backend == "flex":
        return flex_attention_backend(q, k, v, cu_seqlens, softmax_scale, causal, block_mask=block_mask)
    if backend == "sdpa_dense":
        return sdpa_dense_attention(q, k, v, cu_seqlens, softmax_scale, causal)
    if backend == "sdpa_segments":
        return sdpa_segments_attention(q, k, v, cu_seqlens, softmax_scale, causal)
    if backend == "reference":
        return reference_attention(q, k, v, cu_seqlens, softmax_scale, causal)
    raise ValueError(f"unknown attention backend {backend!r}; choose one of {', '.join(BACKENDS)}")
