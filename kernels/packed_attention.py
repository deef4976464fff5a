"""Document-masked (packed-sequence) causal attention: Triton forward and backward.

Layout follows ``flash_attn_varlen_func``: ``q`` ``(total, Hq, D)``, ``k``/``v`` ``(total, Hkv, D)`` with
``Hq % Hkv == 0`` (GQA: q head h reads k/v head ``h // (Hq // Hkv)``), ``cu_seqlens`` int32
``(n_docs + 1,)`` with ``cu_seqlens[0] == 0`` and ``cu_seqlens[-1] == total``.

Math, per head, for a query i and the keys j it may see (same document; j <= i when causal):

    forward   S_ij = scale * q_i . k_j          P_ij = exp(S_ij - LSE_i)      O_i = sum_j P_ij v_j
              LSE_i = log sum_j exp(S_ij)       (saved, fp32, for the backward)
    backward  Delta_i = sum_d dO_id O_id                                       (preprocess kernel)
              dV_j = sum_i P_ij dO_i            dP_ij = dO_i . v_j
              dS_ij = P_ij (dP_ij - Delta_i)    dQ_i = scale sum_j dS_ij k_j   dK_j = scale sum_i dS_ij q_i

Kernels work in base 2: ``exp(x) = exp2(x * LOG2E)``, so ``scale * LOG2E`` is folded into one multiply
of the fp32 score tile and the softmax uses ``exp2`` (one MUFU instruction). The forward keeps the
running max and sum in fp32 (online softmax, FlashAttention-2 style) and rescales the fp32 accumulator
only by ``alpha = exp2(m_old - m_new)``.

Work decomposition (no tile ever touches a token outside the triangle it needs):

* A *tile plan* lists, per document, the tiles that start at the document's first token and step by
  the block size: ``(doc, start)``. Tiles never straddle two documents, so there is no cross-document
  masking at all; only a document's last, partial tile masks its rows. The plan has a static upper
  bound of ``cdiv(total, BLOCK) + n_docs`` entries (no host sync); the unused ones are marked
  ``doc = -1`` and their programs exit at once. Entries are sorted by work, heaviest first, so the long
  tail of a wave is made of cheap tiles.
* Forward / dQ: a q tile ``[m0, m0 + BLOCK_M)`` of document ``[s, e)`` visits keys ``[s, min(m0 +
  BLOCK_M, e))`` (causal) or ``[s, e)``, starting exactly at ``s``. Key tiles wholly at or below the
  tile's first row's diagonal run without any mask; only the remaining diagonal tiles apply the causal
  (and key-bound) mask.
* dK/dV: a key tile ``[n0, n0 + BLOCK_N)`` visits queries ``[n0, e)`` (causal) or ``[s, e)``; the
  diagonal tiles and the document's last partial tile are masked, the rest are not.
* GQA: one dK/dV program per q head. By default they accumulate into fp32 dK/dV with atomics (order
  not fixed). With ``deterministic=True`` each writes its q head's share into its own fp32 slot
  ``(total, Hq, D)`` and the group is summed afterwards in a fixed order, bit-reproducibly (a k/v-head
  program looping over its q heads would need dK, dV, K and V live across three nested loops: it
  spills hundreds of bytes to kilobytes on sm_90 at every tile size). Hq == Hkv stores directly.
  dQ is always computed by its own kernel without atomics.

Shapes: head dims 16, 32, 64, 128, 256; fp16, bf16, fp32 (fp32 dots run in IEEE fp32 for checks).
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from .autotune_configs import (
    TUNED_BLOCKS,
    autotune_space,
    config_key,
    device_capability,
    offered_configs,
    plan_block,
)

# Read once, at import: Triton decides interpreter vs compiled when the kernels are decorated.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# triton.autotune needs an active GPU driver when it decorates; elsewhere (interpreter, or a CPU-only
# import by training code) the kernels are plain jit functions launched with one fixed config.
AUTOTUNE = not INTERPRET and torch.cuda.is_available()

LOG2E = 1.4426950408889634  # 1 / ln 2: exp(x) == exp2(x * LOG2E)
SUPPORTED_HEAD_DIMS = (16, 32, 64, 128, 256)  # powers of two (tl.arange); 16 is tl.dot's minimum K
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# Autotune keys on the longest document rounded up to a power of two, clamped to this range, so a
# training run with slowly varying batches reuses a handful of tuned configs.
_MIN_LEN_BUCKET, _MAX_LEN_BUCKET = 64, 16384


# --------------------------------------------------------------------------------------------------
# Autotune configurations
# --------------------------------------------------------------------------------------------------
# The plan's block (BLOCK_M for forward / dQ, BLOCK_N for dK/dV) is fixed per head dim and GPU by the
# launcher (the plan is built for it); autotune picks the inner block, warps and pipeline stages.


def _fwd_block_m(head_dim: int) -> int:
    if INTERPRET:
        return 16  # tl.dot's minimum; keeps interpreter tests fast
    return plan_block("fwd", head_dim, device_capability())  # fp32 accumulator: BLOCK_M x D


def _dkdv_block_n(head_dim: int) -> int:
    if INTERPRET:
        return 16
    return plan_block("bwd_dkdv", head_dim, device_capability())  # dK, dV accumulators: 2 x BLOCK_N x D


def _dq_block_m(head_dim: int) -> int:
    if INTERPRET:
        return 16
    return plan_block("bwd_dq", head_dim, device_capability())


def _fixed_config(name: str) -> dict:
    """Launch kwargs for the inner block where no autotuner runs (the interpreter's one small config)."""
    if AUTOTUNE:
        return {}
    return {name: 16, "num_warps": 4, "num_stages": 1}  # 16: tl.dot's minimum tile


def _autotune(kernel: str, key: list[str], **kwargs):
    """``triton.autotune`` over the inner block / warps / stages on GPU; identity elsewhere."""
    if not AUTOTUNE:
        return lambda fn: fn
    return triton.autotune(configs=autotune_space(kernel), key=key,
                           prune_configs_by={"early_config_prune": _prune_inner(kernel)}, **kwargs)


def _prune_inner(kernel: str):
    name = TUNED_BLOCKS[kernel][0]

    def prune(configs, named_args, **kwargs):
        head_dim = kwargs.get("HEAD_DIM", named_args.get("HEAD_DIM"))
        bucket = named_args.get("len_bucket", _MAX_LEN_BUCKET)
        offered = offered_configs(kernel, head_dim, device_capability())
        kept = [c for c in configs if config_key(c) in offered and c.kwargs[name] <= bucket]
        # A tile longer than every document only adds masked work; the smallest offered one is kept.
        return kept or [c for c in configs if config_key(c) in offered][:1] or configs[:1]

    return prune


# --------------------------------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------------------------------


@triton.jit
def _attn_fwd_inner(
    acc, l_i, m_i, q,
    k_base, k_stride_t, v_base, v_stride_t,
    lo, hi, offs_m, qk_scale,
    trace_row_ptr,
    HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
    MASK: tl.constexpr, CAUSAL: tl.constexpr, INPUT_PRECISION: tl.constexpr, TRACE: tl.constexpr,
):
    """Keys ``[lo, hi)`` in steps of BLOCK_N; MASK applies the key bound (and the causal mask)."""
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        rows64 = cols.to(tl.int64)  # token index x stride can pass 2**31 on long packed batches
        if MASK:
            col_ok = cols < hi
            k_t = tl.load(k_base + rows64[None, :] * k_stride_t + offs_d[:, None], mask=col_ok[None, :], other=0.0)
            v = tl.load(v_base + rows64[:, None] * v_stride_t + offs_d[None, :], mask=col_ok[:, None], other=0.0)
        else:
            k_t = tl.load(k_base + rows64[None, :] * k_stride_t + offs_d[:, None])
            v = tl.load(v_base + rows64[:, None] * v_stride_t + offs_d[None, :])
        if TRACE:
            if MASK:
                tl.atomic_add(trace_row_ptr + cols, 1, mask=col_ok)
            else:
                tl.atomic_add(trace_row_ptr + cols, 1)
        s = tl.dot(q, k_t, input_precision=INPUT_PRECISION) * qk_scale  # fp32, base-2 logits
        if MASK:
            allowed = col_ok[None, :]
            if CAUSAL:
                allowed = allowed & (cols[None, :] <= offs_m[:, None])
            s = tl.where(allowed, s, float("-inf"))
        # Every row sees key ``lo`` in the first tile, so m_new is finite from the first iteration on.
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        # P is rounded to the input dtype for the second tensor-core dot, as FlashAttention does.
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=INPUT_PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@_autotune(
    "fwd", key=["HEAD_DIM", "BLOCK_M", "len_bucket", "CAUSAL"],
    reset_to_zero=["trace_ptr"],  # TRACE counts with atomics; benchmarking configs must not add up
)
@triton.jit
def _packed_attn_fwd_kernel(
    q_ptr, q_stride_t, q_stride_h,
    k_ptr, k_stride_t, k_stride_h,
    v_ptr, v_stride_t, v_stride_h,
    o_ptr, o_stride_t, o_stride_h,
    lse_ptr, lse_stride_h,
    cu_seqlens_ptr, plan_ptr,
    trace_ptr, trace_stride_p,
    qk_scale, n_heads, len_bucket,
    GROUPS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, INPUT_PRECISION: tl.constexpr, TRACE: tl.constexpr,
):
    """One program = one q tile of one document for one q head; writes O and the natural-log LSE."""
    tl.static_assert(BLOCK_M >= 16 and BLOCK_N >= 16, "tl.dot needs tiles of at least 16")
    pid = tl.program_id(0)
    entry = pid // n_heads
    head = pid % n_heads  # heads vary fastest: programs of one tile (and one k/v head) run together
    doc = tl.load(plan_ptr + 2 * entry)
    if doc < 0:
        return
    q_start = tl.load(plan_ptr + 2 * entry + 1)
    doc_start = tl.load(cu_seqlens_ptr + doc)
    doc_end = tl.load(cu_seqlens_ptr + doc + 1)
    kv_head = head // GROUPS

    offs_m = q_start + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < doc_end
    rows64 = offs_m.to(tl.int64)
    q = tl.load(q_ptr + head * q_stride_h + rows64[:, None] * q_stride_t + offs_d[None, :],
                mask=row_ok[:, None], other=0.0)
    k_base = k_ptr + kv_head * k_stride_h
    v_base = v_ptr + kv_head * v_stride_h
    trace_row_ptr = trace_ptr + (pid.to(tl.int64) * trace_stride_p)

    m_i = tl.zeros([BLOCK_M], dtype=tl.float32) - float("inf")
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    if CAUSAL:
        hi = tl.minimum(q_start + BLOCK_M, doc_end)
        # Key tiles [n, n + BLOCK_N) with n + BLOCK_N <= q_start + 1 lie at or below every row's diagonal.
        full_end = doc_start + ((q_start + 1 - doc_start) // BLOCK_N) * BLOCK_N
    else:
        hi = doc_end
        full_end = doc_start + ((doc_end - doc_start) // BLOCK_N) * BLOCK_N
    acc, l_i, m_i = _attn_fwd_inner(
        acc, l_i, m_i, q, k_base, k_stride_t, v_base, v_stride_t, doc_start, full_end, offs_m, qk_scale,
        trace_row_ptr, HEAD_DIM, BLOCK_N, False, CAUSAL, INPUT_PRECISION, TRACE)
    acc, l_i, m_i = _attn_fwd_inner(
        acc, l_i, m_i, q, k_base, k_stride_t, v_base, v_stride_t, full_end, hi, offs_m, qk_scale,
        trace_row_ptr, HEAD_DIM, BLOCK_N, True, CAUSAL, INPUT_PRECISION, TRACE)

    out = acc / l_i[:, None]
    lse = (m_i + tl.log2(l_i)) * 0.6931471805599453  # ln 2: back to natural log
    tl.store(o_ptr + head * o_stride_h + rows64[:, None] * o_stride_t + offs_d[None, :],
             out.to(o_ptr.dtype.element_ty), mask=row_ok[:, None])
    tl.store(lse_ptr + head * lse_stride_h + offs_m, lse, mask=row_ok)


# --------------------------------------------------------------------------------------------------
# Backward
# --------------------------------------------------------------------------------------------------


@triton.jit
def _attn_bwd_preprocess_kernel(
    o_ptr, o_stride_t, o_stride_h,
    do_ptr, do_stride_t, do_stride_h,
    delta_ptr, delta_stride_h,
    total,
    HEAD_DIM: tl.constexpr, BLOCK_T: tl.constexpr,
):
    """Delta[h, t] = sum_d dO[t, h, d] * O[t, h, d] in fp32 (one program per token block and head)."""
    head = tl.program_id(1)
    offs_t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, HEAD_DIM)
    t_ok = offs_t < total
    rows64 = offs_t.to(tl.int64)
    o = tl.load(o_ptr + head * o_stride_h + rows64[:, None] * o_stride_t + offs_d[None, :],
                mask=t_ok[:, None], other=0.0).to(tl.float32)
    do = tl.load(do_ptr + head * do_stride_h + rows64[:, None] * do_stride_t + offs_d[None, :],
                 mask=t_ok[:, None], other=0.0).to(tl.float32)
    tl.store(delta_ptr + head * delta_stride_h + offs_t, tl.sum(o * do, axis=1), mask=t_ok)


@triton.jit
def _attn_bwd_dkdv_inner(
    dk, dv, k, v,
    q_base, q_stride_t, do_base, do_stride_t, lse_base, delta_base,
    lo, hi, offs_n, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
    MASK: tl.constexpr, CAUSAL: tl.constexpr, INPUT_PRECISION: tl.constexpr,
):
    """Query rows ``[lo, hi)`` in steps of BLOCK_M against one key tile, transposed (keys x queries)."""
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    for start_m in range(lo, hi, BLOCK_M):
        rows = start_m + offs_m
        rows64 = rows.to(tl.int64)
        if MASK:
            row_ok = rows < hi
            q = tl.load(q_base + rows64[:, None] * q_stride_t + offs_d[None, :], mask=row_ok[:, None], other=0.0)
            do = tl.load(do_base + rows64[:, None] * do_stride_t + offs_d[None, :], mask=row_ok[:, None], other=0.0)
            # +inf LSE makes P exactly 0 on rows past the document (belt and braces with the mask below).
            lse = tl.load(lse_base + rows, mask=row_ok, other=float("inf"))
            delta = tl.load(delta_base + rows, mask=row_ok, other=0.0)
        else:
            q = tl.load(q_base + rows64[:, None] * q_stride_t + offs_d[None, :])
            do = tl.load(do_base + rows64[:, None] * do_stride_t + offs_d[None, :])
            lse = tl.load(lse_base + rows)
            delta = tl.load(delta_base + rows)
        s_t = tl.dot(k, tl.trans(q), input_precision=INPUT_PRECISION) * qk_scale  # [BLOCK_N, BLOCK_M]
        p_t = tl.exp2(s_t - lse[None, :] * 1.4426950408889634)  # 1/ln 2: LSE is stored in natural log
        if MASK:
            allowed = row_ok[None, :]
            if CAUSAL:
                allowed = allowed & (rows[None, :] >= offs_n[:, None])
            p_t = tl.where(allowed, p_t, 0.0)
        dv += tl.dot(p_t.to(do.dtype), do, input_precision=INPUT_PRECISION)
        dp_t = tl.dot(v, tl.trans(do), input_precision=INPUT_PRECISION)
        ds_t = p_t * (dp_t - delta[None, :])
        dk += tl.dot(ds_t.to(q.dtype), q, input_precision=INPUT_PRECISION)
    return dk, dv


@_autotune(
    "bwd_dkdv",
    key=["HEAD_DIM", "BLOCK_N", "len_bucket", "CAUSAL", "ATOMIC"],
    reset_to_zero=["dk_ptr", "dv_ptr"],  # the ATOMIC variant accumulates while benchmarking configs
)
@triton.jit
def _packed_attn_bwd_dkdv_kernel(
    q_ptr, q_stride_t, q_stride_h,
    k_ptr, k_stride_t, k_stride_h,
    v_ptr, v_stride_t, v_stride_h,
    do_ptr, do_stride_t, do_stride_h,
    lse_ptr, delta_ptr, stat_stride_h,
    dk_ptr, dk_stride_t, dk_stride_h,
    dv_ptr, dv_stride_t, dv_stride_h,
    cu_seqlens_ptr, plan_ptr,
    sm_scale, qk_scale, n_heads, len_bucket,
    GROUPS: tl.constexpr, ATOMIC: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, INPUT_PRECISION: tl.constexpr,
):
    """One program = one key tile of one document for one q head.

    ATOMIC: fp32 atomics into dK/dV of the q head's k/v head. Otherwise a plain store into the q head's
    own slot (``dk_ptr`` then has Hq heads: dK/dV themselves when Hq == Hkv, else per-q-head buffers).
    """
    tl.static_assert(BLOCK_M >= 16 and BLOCK_N >= 16, "tl.dot needs tiles of at least 16")
    pid = tl.program_id(0)
    entry = pid // n_heads
    head = pid % n_heads
    doc = tl.load(plan_ptr + 2 * entry)
    if doc < 0:
        return
    k_start = tl.load(plan_ptr + 2 * entry + 1)
    doc_start = tl.load(cu_seqlens_ptr + doc)
    doc_end = tl.load(cu_seqlens_ptr + doc + 1)
    kv_head = head // GROUPS
    out_head = kv_head if ATOMIC else head

    offs_n = k_start + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    col_ok = offs_n < doc_end
    cols64 = offs_n.to(tl.int64)
    k = tl.load(k_ptr + kv_head * k_stride_h + cols64[:, None] * k_stride_t + offs_d[None, :],
                mask=col_ok[:, None], other=0.0)
    v = tl.load(v_ptr + kv_head * v_stride_h + cols64[:, None] * v_stride_t + offs_d[None, :],
                mask=col_ok[:, None], other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)

    if CAUSAL:
        # Rows [k_start, k_start + DIAG) can sit above some key of the tile (masked); later rows see all.
        diag_end = tl.minimum(k_start + tl.cdiv(BLOCK_N, BLOCK_M) * BLOCK_M, doc_end)
        masked_lo = k_start
    else:
        diag_end = doc_start
        masked_lo = doc_start
    full_end = diag_end + ((doc_end - diag_end) // BLOCK_M) * BLOCK_M
    q_base = q_ptr + head * q_stride_h
    do_base = do_ptr + head * do_stride_h
    lse_base = lse_ptr + head * stat_stride_h
    delta_base = delta_ptr + head * stat_stride_h
    dk, dv = _attn_bwd_dkdv_inner(
        dk, dv, k, v, q_base, q_stride_t, do_base, do_stride_t, lse_base, delta_base,
        masked_lo, diag_end, offs_n, qk_scale, HEAD_DIM, BLOCK_M, True, CAUSAL, INPUT_PRECISION)
    dk, dv = _attn_bwd_dkdv_inner(
        dk, dv, k, v, q_base, q_stride_t, do_base, do_stride_t, lse_base, delta_base,
        diag_end, full_end, offs_n, qk_scale, HEAD_DIM, BLOCK_M, False, CAUSAL, INPUT_PRECISION)
    dk, dv = _attn_bwd_dkdv_inner(
        dk, dv, k, v, q_base, q_stride_t, do_base, do_stride_t, lse_base, delta_base,
        full_end, doc_end, offs_n, qk_scale, HEAD_DIM, BLOCK_M, True, CAUSAL, INPUT_PRECISION)

    dk = dk * sm_scale
    dk_ptrs = dk_ptr + out_head * dk_stride_h + cols64[:, None] * dk_stride_t + offs_d[None, :]
    dv_ptrs = dv_ptr + out_head * dv_stride_h + cols64[:, None] * dv_stride_t + offs_d[None, :]
    if ATOMIC:
        tl.atomic_add(dk_ptrs, dk, mask=col_ok[:, None])
        tl.atomic_add(dv_ptrs, dv, mask=col_ok[:, None])
    else:
        tl.store(dk_ptrs, dk.to(dk_ptr.dtype.element_ty), mask=col_ok[:, None])
        tl.store(dv_ptrs, dv.to(dv_ptr.dtype.element_ty), mask=col_ok[:, None])


@triton.jit
def _attn_bwd_dq_inner(
    dq, q, do, lse2, delta,
    k_base, k_stride_t, v_base, v_stride_t,
    lo, hi, offs_m, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
    MASK: tl.constexpr, CAUSAL: tl.constexpr, INPUT_PRECISION: tl.constexpr,
):
    """Keys ``[lo, hi)`` in steps of BLOCK_N against one q tile; same bounds as the forward."""
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        cols64 = cols.to(tl.int64)
        if MASK:
            col_ok = cols < hi
            k_t = tl.load(k_base + cols64[None, :] * k_stride_t + offs_d[:, None], mask=col_ok[None, :], other=0.0)
            v_t = tl.load(v_base + cols64[None, :] * v_stride_t + offs_d[:, None], mask=col_ok[None, :], other=0.0)
        else:
            k_t = tl.load(k_base + cols64[None, :] * k_stride_t + offs_d[:, None])
            v_t = tl.load(v_base + cols64[None, :] * v_stride_t + offs_d[:, None])
        s = tl.dot(q, k_t, input_precision=INPUT_PRECISION) * qk_scale
        p = tl.exp2(s - lse2[:, None])
        if MASK:
            allowed = col_ok[None, :]
            if CAUSAL:
                allowed = allowed & (cols[None, :] <= offs_m[:, None])
            p = tl.where(allowed, p, 0.0)
        dp = tl.dot(do, v_t, input_precision=INPUT_PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k_t.dtype), tl.trans(k_t), input_precision=INPUT_PRECISION)
    return dq


@_autotune("bwd_dq", key=["HEAD_DIM", "BLOCK_M", "len_bucket", "CAUSAL"])
@triton.jit
def _packed_attn_bwd_dq_kernel(
    q_ptr, q_stride_t, q_stride_h,
    k_ptr, k_stride_t, k_stride_h,
    v_ptr, v_stride_t, v_stride_h,
    do_ptr, do_stride_t, do_stride_h,
    lse_ptr, delta_ptr, stat_stride_h,
    dq_ptr, dq_stride_t, dq_stride_h,
    cu_seqlens_ptr, plan_ptr,
    sm_scale, qk_scale, n_heads, len_bucket,
    GROUPS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, INPUT_PRECISION: tl.constexpr,
):
    """One program = one q tile of one document for one q head; writes dQ (no atomics)."""
    tl.static_assert(BLOCK_M >= 16 and BLOCK_N >= 16, "tl.dot needs tiles of at least 16")
    pid = tl.program_id(0)
    entry = pid // n_heads
    head = pid % n_heads
    doc = tl.load(plan_ptr + 2 * entry)
    if doc < 0:
        return
    q_start = tl.load(plan_ptr + 2 * entry + 1)
    doc_start = tl.load(cu_seqlens_ptr + doc)
    doc_end = tl.load(cu_seqlens_ptr + doc + 1)
    kv_head = head // GROUPS

    offs_m = q_start + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < doc_end
    rows64 = offs_m.to(tl.int64)
    q = tl.load(q_ptr + head * q_stride_h + rows64[:, None] * q_stride_t + offs_d[None, :],
                mask=row_ok[:, None], other=0.0)
    do = tl.load(do_ptr + head * do_stride_h + rows64[:, None] * do_stride_t + offs_d[None, :],
                 mask=row_ok[:, None], other=0.0)
    # +inf on rows past the document: their P is exactly 0 even in unmasked key tiles.
    lse2 = tl.load(lse_ptr + head * stat_stride_h + offs_m, mask=row_ok, other=float("inf")) * 1.4426950408889634
    delta = tl.load(delta_ptr + head * stat_stride_h + offs_m, mask=row_ok, other=0.0)
    k_base = k_ptr + kv_head * k_stride_h
    v_base = v_ptr + kv_head * v_stride_h
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    if CAUSAL:
        hi = tl.minimum(q_start + BLOCK_M, doc_end)
        full_end = doc_start + ((q_start + 1 - doc_start) // BLOCK_N) * BLOCK_N
    else:
        hi = doc_end
        full_end = doc_start + ((doc_end - doc_start) // BLOCK_N) * BLOCK_N
    dq = _attn_bwd_dq_inner(dq, q, do, lse2, delta, k_base, k_stride_t, v_base, v_stride_t,
                            doc_start, full_end, offs_m, qk_scale, HEAD_DIM, BLOCK_N, False, CAUSAL, INPUT_PRECISION)
    dq = _attn_bwd_dq_inner(dq, q, do, lse2, delta, k_base, k_stride_t, v_base, v_stride_t,
                            full_end, hi, offs_m, qk_scale, HEAD_DIM, BLOCK_N, True, CAUSAL, INPUT_PRECISION)
    dq = dq * sm_scale
    tl.store(dq_ptr + head * dq_stride_h + rows64[:, None] * dq_stride_t + offs_d[None, :],
             dq.to(dq_ptr.dtype.element_ty), mask=row_ok[:, None])


# --------------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------------


def _empty(shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Every output the kernels fully overwrite is allocated here (tests swap in a NaN-filled one)."""
    return torch.empty(shape, dtype=dtype, device=device)


def _check_cu_seqlens_values(cu_seqlens: torch.Tensor, total: int) -> None:
    # Free on the host; on CUDA it would cost a sync per call, so there the caller is trusted (as with
    # flash-attn). Runs inside the op, where tensors are real even under torch.compile.
    if cu_seqlens.device.type != "cpu":
        return
    cu = cu_seqlens.tolist()
    if cu[0] != 0 or cu[-1] != total or any(b < a for a, b in zip(cu[:-1], cu[1:])):
        raise ValueError(f"cu_seqlens must rise from 0 to total_tokens={total}; got {cu}")


def _unit_stride(x: torch.Tensor) -> torch.Tensor:
    # Kernels take (token, head) strides and assume unit stride along head_dim.
    return x if x.stride(-1) == 1 else x.contiguous()


def _len_bucket(max_seqlen: int, total: int) -> int:
    longest = max_seqlen if max_seqlen > 0 else total  # unknown: the whole batch bounds it
    return min(max(triton.next_power_of_2(max(longest, 1)), _MIN_LEN_BUCKET), _MAX_LEN_BUCKET)


def _input_precision(dtype: torch.dtype) -> str | None:
    # fp32 inputs are for checks: keep the dots in IEEE fp32, not TF32. fp16/bf16: tl.dot's default.
    return "ieee" if dtype == torch.float32 else None


def tile_plan(cu_seqlens: torch.Tensor, total: int, block: int, causal: bool, *, queries: bool) -> torch.Tensor:
    """int32 ``(P, 2)`` of ``(doc, start)`` tiles, heaviest first; unused rows have ``doc == -1``.

    ``P = cdiv(total, block) + n_docs`` bounds the tile count without reading ``cu_seqlens`` on the
    host. ``queries`` selects the work estimate used for ordering: keys visited by a q tile
    (``tile end - doc start``) or queries visited by a key tile (``doc end - tile start``).
    """
    device = cu_seqlens.device
    cu = cu_seqlens.to(torch.int64)
    n_docs = cu.numel() - 1
    lens = cu[1:] - cu[:-1]
    n_tiles = (lens + block - 1) // block
    tiles_end = torch.cumsum(n_tiles, 0)
    slots = torch.arange(triton.cdiv(total, block) + n_docs, device=device)
    doc = torch.searchsorted(tiles_end, slots, right=True)
    valid = doc < n_docs
    doc_c = doc.clamp(max=max(n_docs - 1, 0))
    start = cu[doc_c] + (slots - (tiles_end[doc_c] - n_tiles[doc_c])) * block
    end = torch.minimum(start + block, cu[doc_c + 1])
    if not causal:
        work = lens[doc_c] * (end - start)
    elif queries:
        work = (end - cu[doc_c]) * (end - start)
    else:
        work = (cu[doc_c + 1] - start) * (end - start)
    work = torch.where(valid, work, -1)
    order = torch.argsort(work, descending=True, stable=True)
    plan = torch.stack([torch.where(valid, doc, -1), torch.where(valid, start, 0)], dim=1)
    return plan[order].to(torch.int32).contiguous()


def _forward(q, k, v, cu_seqlens, max_seqlen: int, softmax_scale: float, causal: bool, trace: bool = False):
    total, n_heads, head_dim = q.shape
    out = _empty(q.shape, q.dtype, q.device)
    lse = _empty((n_heads, total), torch.float32, q.device)
    if total == 0:
        return out, lse, None
    block_m = _fwd_block_m(head_dim)
    plan = tile_plan(cu_seqlens, total, block_m, causal, queries=True)
    grid = (plan.shape[0] * n_heads,)
    # TRACE counts, per program, how often each key token was loaded (tests only).
    visits = torch.zeros((grid[0], total) if trace else (1, 1), dtype=torch.int32, device=q.device)
    _packed_attn_fwd_kernel[grid](
        q, q.stride(0), q.stride(1),
        k, k.stride(0), k.stride(1),
        v, v.stride(0), v.stride(1),
        out, out.stride(0), out.stride(1),
        lse, lse.stride(0),
        cu_seqlens, plan,
        visits, visits.stride(0),
        softmax_scale * LOG2E, n_heads, _len_bucket(max_seqlen, total),
        GROUPS=n_heads // k.shape[1], HEAD_DIM=head_dim, BLOCK_M=block_m,
        CAUSAL=causal, INPUT_PRECISION=_input_precision(q.dtype), TRACE=trace, **_fixed_config("BLOCK_N"),
    )
    return out, lse, ((plan, visits) if trace else None)


def _backward(do, q, k, v, out, lse, cu_seqlens, max_seqlen: int, softmax_scale: float, causal: bool,
              deterministic: bool):
    total, n_heads, head_dim = q.shape
    n_kv_heads = k.shape[1]
    groups = n_heads // n_kv_heads
    dq = _empty(q.shape, q.dtype, q.device)
    if total == 0:
        return dq, torch.zeros_like(k), torch.zeros_like(v)
    bucket = _len_bucket(max_seqlen, total)
    precision = _input_precision(q.dtype)
    qk_scale = softmax_scale * LOG2E

    delta = _empty((n_heads, total), torch.float32, q.device)
    block_t = 16 if INTERPRET else 64  # tokens per preprocess program: 64 x D x 2 inputs fits in registers
    _attn_bwd_preprocess_kernel[(triton.cdiv(total, block_t), n_heads)](
        out, out.stride(0), out.stride(1),
        do, do.stride(0), do.stride(1),
        delta, delta.stride(0),
        total, HEAD_DIM=head_dim, BLOCK_T=block_t,
    )

    atomic = groups > 1 and not deterministic
    if atomic:  # fp32 accumulators that every q head of a group adds into
        dk = torch.zeros(k.shape, dtype=torch.float32, device=k.device)
        dv = torch.zeros(v.shape, dtype=torch.float32, device=v.device)
    elif groups > 1:  # deterministic GQA: one fp32 slot per q head, summed over the group below
        dk = _empty((total, n_heads, head_dim), torch.float32, k.device)
        dv = _empty((total, n_heads, head_dim), torch.float32, v.device)
    else:
        dk = _empty(k.shape, k.dtype, k.device)
        dv = _empty(v.shape, v.dtype, v.device)
    block_n = _dkdv_block_n(head_dim)
    kv_plan = tile_plan(cu_seqlens, total, block_n, causal, queries=False)
    _packed_attn_bwd_dkdv_kernel[(kv_plan.shape[0] * n_heads,)](
        q, q.stride(0), q.stride(1),
        k, k.stride(0), k.stride(1),
        v, v.stride(0), v.stride(1),
        do, do.stride(0), do.stride(1),
        lse, delta, lse.stride(0),
        dk, dk.stride(0), dk.stride(1),
        dv, dv.stride(0), dv.stride(1),
        cu_seqlens, kv_plan,
        softmax_scale, qk_scale, n_heads, bucket,
        GROUPS=groups, ATOMIC=atomic,
        HEAD_DIM=head_dim, BLOCK_N=block_n, CAUSAL=causal, INPUT_PRECISION=precision,
        **_fixed_config("BLOCK_M"),
    )
    if atomic:
        dk, dv = dk.to(k.dtype), dv.to(v.dtype)
    elif groups > 1:  # q heads h * groups .. h * groups + groups - 1 share k/v head h: a fixed-order sum
        dk = dk.view(total, n_kv_heads, groups, head_dim).sum(2).to(k.dtype)
        dv = dv.view(total, n_kv_heads, groups, head_dim).sum(2).to(v.dtype)

    block_m = _dq_block_m(head_dim)
    q_plan = tile_plan(cu_seqlens, total, block_m, causal, queries=True)
    _packed_attn_bwd_dq_kernel[(q_plan.shape[0] * n_heads,)](
        q, q.stride(0), q.stride(1),
        k, k.stride(0), k.stride(1),
        v, v.stride(0), v.stride(1),
        do, do.stride(0), do.stride(1),
        lse, delta, lse.stride(0),
        dq, dq.stride(0), dq.stride(1),
        cu_seqlens, q_plan,
        softmax_scale, qk_scale, n_heads, bucket,
        GROUPS=groups, HEAD_DIM=head_dim, BLOCK_M=block_m, CAUSAL=causal, INPUT_PRECISION=precision,
        **_fixed_config("BLOCK_N"),
    )
    return dq, dk, dv


# --------------------------------------------------------------------------------------------------
# Autograd: two custom ops (opaque to torch.compile, with fake implementations) + register_autograd
# --------------------------------------------------------------------------------------------------


@torch.library.custom_op("ipt_engine::packed_attention_fwd", mutates_args=())
def _packed_attention_fwd_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
    max_seqlen: int, softmax_scale: float, causal: bool, deterministic: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_cu_seqlens_values(cu_seqlens, q.shape[0])
    out, lse, _ = _forward(_unit_stride(q), _unit_stride(k), _unit_stride(v), cu_seqlens, max_seqlen,
                           softmax_scale, causal)
    return out, lse


@_packed_attention_fwd_op.register_fake
def _(q, k, v, cu_seqlens, max_seqlen, softmax_scale, causal, deterministic):
    return torch.empty_like(q, memory_format=torch.contiguous_format), q.new_empty(
        (q.shape[1], q.shape[0]), dtype=torch.float32)


@torch.library.custom_op("ipt_engine::packed_attention_bwd", mutates_args=())
def _packed_attention_bwd_op(
    do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
    lse: torch.Tensor, cu_seqlens: torch.Tensor,
    max_seqlen: int, softmax_scale: float, causal: bool, deterministic: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _backward(_unit_stride(do), _unit_stride(q), _unit_stride(k), _unit_stride(v), out, lse,
                     cu_seqlens, max_seqlen, softmax_scale, causal, deterministic)


@_packed_attention_bwd_op.register_fake
def _(do, q, k, v, out, lse, cu_seqlens, max_seqlen, softmax_scale, causal, deterministic):
    return tuple(torch.empty_like(x, memory_format=torch.contiguous_format) for x in (q, k, v))


def _setup_context(ctx, inputs, output):
    q, k, v, cu_seqlens, max_seqlen, softmax_scale, causal, deterministic = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, cu_seqlens)
    ctx.args = (max_seqlen, softmax_scale, causal, deterministic)
    ctx.mark_non_differentiable(lse)


def _backward_rule(ctx, d_out, _d_lse):
    q, k, v, out, lse, cu_seqlens = ctx.saved_tensors
    dq, dk, dv = _packed_attention_bwd_op(d_out, q, k, v, out, lse, cu_seqlens, *ctx.args)
    return dq, dk, dv, None, None, None, None, None


_packed_attention_fwd_op.register_autograd(_backward_rule, setup_context=_setup_context)


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def _check_inputs(q, k, v, cu_seqlens) -> None:
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise ValueError(f"q, k, v must be (total_tokens, heads, head_dim); got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape != v.shape:
        raise ValueError(f"k and v shapes differ: {tuple(k.shape)} vs {tuple(v.shape)}")
    if q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2]:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} must share total_tokens and head_dim")
    if k.shape[1] == 0 or q.shape[1] % k.shape[1]:
        raise ValueError(f"q heads ({q.shape[1]}) must be a multiple of k/v heads ({k.shape[1]})")
    if q.shape[2] not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"head_dim {q.shape[2]} is not supported; use one of {SUPPORTED_HEAD_DIMS}")
    if q.dtype not in SUPPORTED_DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"q, k, v must share one dtype of {SUPPORTED_DTYPES}; got {q.dtype}, {k.dtype}, {v.dtype}")
    if cu_seqlens.dtype != torch.int32 or cu_seqlens.dim() != 1 or cu_seqlens.numel() < 1:
        raise ValueError(f"cu_seqlens must be a 1-D int32 tensor; got {cu_seqlens.dtype} {tuple(cu_seqlens.shape)}")
    if not (q.device == k.device == v.device == cu_seqlens.device):
        raise ValueError("q, k, v and cu_seqlens must be on one device")
    if q.device.type != "cuda" and not INTERPRET:
        raise ValueError("packed_attention needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tests); "
                         "on CPU use backends.attention(..., backend='flex' or 'reference')")


def packed_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int | None = None,
    softmax_scale: float | None = None,
    causal: bool = True,
    deterministic: bool = False,
) -> torch.Tensor:
    """Document-masked attention over packed tokens; returns ``(total, Hq, D)`` in ``q.dtype``.

    ``max_seqlen`` (the longest document) only selects tuned configs; without it the batch length is
    used. ``deterministic=True`` makes the backward bit-reproducible under GQA (no atomics).
    """
    _check_inputs(q, k, v, cu_seqlens)
    scale = 1.0 / math.sqrt(q.shape[-1]) if softmax_scale is None else float(softmax_scale)
    out, _ = _packed_attention_fwd_op(q, k, v, cu_seqlens, -1 if max_seqlen is None else int(max_seqlen),
                                      scale, bool(causal), bool(deterministic))
    return out
