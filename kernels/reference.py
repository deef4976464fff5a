"""Pure-PyTorch document-masked attention: the references that tests and benchmarks both import.

All functions take the varlen layout of ``flash_attn_varlen_func``: ``q`` ``(total, Hq, D)``, ``k``/``v``
``(total, Hkv, D)`` with ``Hq % Hkv == 0`` (grouped-query attention: q head h reads k/v head
``h // (Hq // Hkv)``), ``cu_seqlens`` int32 ``(n_docs + 1,)``. Token i attends to token j iff both lie in
the same document and (when causal) j <= i:

    O_i = sum_j softmax_j(scale * q_i . k_j) v_j        over the allowed j

* :func:`reference_attention` - an explicit per-document loop in float64 (the ground truth).
* :func:`sdpa_dense_attention` - one SDPA call with a dense ``[total, total]`` boolean mask (what a
  naive packed implementation does; O(total^2) memory).
* :func:`flex_attention_backend` - FlexAttention with a document ``mask_mod`` and a BlockMask; compiled
  on CUDA, eager elsewhere (compiling flex_attention fails on CPU with torch 2.7).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F


def default_scale(head_dim: int, softmax_scale: float | None) -> float:
    return 1.0 / math.sqrt(head_dim) if softmax_scale is None else float(softmax_scale)


def document_ids(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """``doc_id[t]`` = index of the document holding token t (int32, on ``cu_seqlens``' device)."""
    tokens = torch.arange(total, device=cu_seqlens.device, dtype=cu_seqlens.dtype)
    return (torch.searchsorted(cu_seqlens, tokens, right=True) - 1).to(torch.int32)


def _repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def reference_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    softmax_scale: float | None = None,
    causal: bool = True,
    *,
    return_lse: bool = False,
):
    """Ground truth: a loop over documents, computed in float64, returned in ``q.dtype``.

    Differentiable (autograd flows through the float64 casts). With ``return_lse`` also returns the
    natural-log log-sum-exp of each row's scaled scores, float64 ``(Hq, total)``.
    """
    scale = default_scale(q.shape[-1], softmax_scale)
    groups = q.shape[1] // k.shape[1]
    q64, k64, v64 = q.to(torch.float64), _repeat_kv(k.to(torch.float64), groups), _repeat_kv(v.to(torch.float64), groups)
    outs, lses = [], []
    bounds = cu_seqlens.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end == start:
            continue
        qd, kd, vd = (x[start:end].transpose(0, 1) for x in (q64, k64, v64))  # (H, L, D)
        scores = torch.matmul(qd, kd.transpose(-1, -2)) * scale
        if causal:
            length = end - start
            allowed = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
            scores = scores.masked_fill(~allowed, float("-inf"))
        lses.append(torch.logsumexp(scores, dim=-1))
        outs.append(torch.matmul(torch.softmax(scores, dim=-1), vd).transpose(0, 1))
    out = torch.cat(outs, dim=0).to(q.dtype)
    if return_lse:
        return out, torch.cat(lses, dim=-1)
    return out


def dense_document_mask(cu_seqlens: torch.Tensor, total: int, causal: bool = True) -> torch.Tensor:
    """Boolean ``[total, total]`` mask, True where query i may attend to key j."""
    doc = document_ids(cu_seqlens, total)
    mask = doc[:, None] == doc[None, :]
    if causal:
        mask &= torch.ones(total, total, dtype=torch.bool, device=doc.device).tril()
    return mask


def sdpa_dense_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    softmax_scale: float | None = None,
    causal: bool = True,
    *,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """One ``scaled_dot_product_attention`` call over all tokens with a dense document mask."""
    total, heads, _ = q.shape
    if mask is None:
        mask = dense_document_mask(cu_seqlens, total, causal)
    groups = heads // k.shape[1]
    qh, kh, vh = (x.transpose(0, 1).unsqueeze(0) for x in (q, _repeat_kv(k, groups), _repeat_kv(v, groups)))
    out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, scale=default_scale(q.shape[-1], softmax_scale))
    return out.squeeze(0).transpose(0, 1)


def flex_block_mask(cu_seqlens: torch.Tensor, total: int, causal: bool = True):
    """FlexAttention BlockMask for document-masked (causal) attention over ``total`` packed tokens."""
    from torch.nn.attention.flex_attention import create_block_mask

    doc = document_ids(cu_seqlens, total)

    def document_mask(b, h, q_idx, kv_idx):
        same = doc[q_idx] == doc[kv_idx]
        return same & (q_idx >= kv_idx) if causal else same

    return create_block_mask(document_mask, B=None, H=None, Q_LEN=total, KV_LEN=total, device=cu_seqlens.device)


@lru_cache(maxsize=1)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex_attention_backend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    softmax_scale: float | None = None,
    causal: bool = True,
    *,
    block_mask=None,
) -> torch.Tensor:
    """FlexAttention with a document mask; pass ``block_mask`` to reuse one across calls."""
    from torch.nn.attention.flex_attention import flex_attention

    total = q.shape[0]
    if block_mask is None:
        block_mask = flex_block_mask(cu_seqlens, total, causal)
    fn = _compiled_flex() if q.is_cuda else flex_attention
    qh, kh, vh = (x.transpose(0, 1).unsqueeze(0) for x in (q, k, v))
    out = fn(qh, kh, vh, block_mask=block_mask, scale=default_scale(q.shape[-1], softmax_scale),
             enable_gqa=q.shape[1] != k.shape[1])
    return out.squeeze(0).transpose(0, 1)
