"""The causal-LM loss without the logits: LM head and cross-entropy fused, chunk by chunk.

A language model's last step, ``logits = hidden @ Wᵀ`` followed by cross-entropy, is its largest
tensor: tokens × vocab in float32 (4 × 2048 tokens × 32k vocab = 1 GiB), and its gradient as much
again. For a small model it is also most of the step's time, because the step spends it writing and
re-reading those tensors, not computing. Three implementations give the same mean loss over the
targets that are not ``ignore_index``:

- ``full``: the materialized logits (what Hugging Face models do); the reference.
- ``chunked`` (:class:`ChunkedLinearCrossEntropy`, plain PyTorch, any device): ``chunk_size`` targets at
  a time, with only ignored targets dropped first. For each chunk it computes the logits into one
  reused buffer, their softmax in place, the loss terms, and right away the gradients
  ``dL/dh = (softmax - onehot) W / n`` and ``dL/dW = (softmax - onehot)ᵀ h / n``; the buffer is then
  free for the next chunk. Extra memory is one ``chunk_size × vocab`` buffer plus the two gradients
  (the size of ``hidden`` and ``W``), never ``tokens × vocab``. Backward only scales the stored
  gradients by the incoming scalar, so the three matmuls (logits, dL/dh, dL/dW) each run once.
- ``fused`` (CUDA): Liger-Kernel's ``LigerFusedLinearCrossEntropyLoss``, the same scheme with the
  softmax and its gradient in one Triton kernel.

``auto`` picks ``fused`` on CUDA and ``chunked`` elsewhere.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch

IGNORE_INDEX = -100
CrossEntropyMode = Literal["auto", "fused", "chunked", "full"]
_FLOAT32_TINY = 1.1754944e-38  # smallest normal float32: below it -log(p) loses precision
log = logging.getLogger(__name__)


def resolve_mode(mode: str, device_type: str) -> str:
    """The implementation behind a configured mode on a device: ``auto`` is ``fused`` on CUDA when
    Liger-Kernel imports, ``chunked`` otherwise."""
    if mode == "auto":
        if device_type == "cuda" and _liger_loss_class() is not None:
            return "fused"
        return "chunked"
    if mode == "fused" and device_type != "cuda":
        raise ValueError("cross_entropy 'fused' needs CUDA (Liger-Kernel's Triton kernel); use 'chunked' or 'auto'")
    return mode


def _liger_loss_class() -> Any:
    """Liger-Kernel's fused loss class, or None when the package is missing or will not import here."""
    global _LIGER
    if _LIGER is False:
        try:
            from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss
        except Exception as e:  # noqa: BLE001 - any import failure means "not available"; say why once
            log.warning("liger-kernel unavailable (%s: %s); using the chunked cross-entropy", type(e).__name__, e)
            _LIGER = None
        else:
            _LIGER = LigerFusedLinearCrossEntropyLoss
    return _LIGER


_LIGER: Any = False  # not looked up yet


def full_linear_cross_entropy(hidden: Any, weight: Any, labels: Any, ignore_index: int = IGNORE_INDEX) -> Any:
    """Mean cross-entropy over the materialized logits, upcast to float32 as Hugging Face's loss does."""
    logits = (hidden @ weight.t()).float()
    return torch.nn.functional.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="mean")


def _compute_dtype(device_type: str, default: torch.dtype) -> torch.dtype:
    """The matmul dtype autocast would pick (``amp_bf16`` runs the head in bf16), else the input's."""
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return default


def _chunked_forward(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk_size: int,
                     ignore_index: int, need_h: bool, need_w: bool) -> tuple[Any, ...]:
    """Sum of the per-target losses, the unscaled gradients of the kept rows and of ``weight``
    (transposed), the kept rows' indices, and their number n.

    Float32 for everything past the matmuls (log-softmax, gradient accumulation), as the reference's
    upcast logits; the matmuls run in the compute dtype (float32 on CPU, bf16 under ``amp_bf16``).
    """
    device = hidden.device
    dtype = _compute_dtype(device.type, hidden.dtype)
    keep = (labels != ignore_index).nonzero().squeeze(1)
    n = int(keep.numel())
    h = hidden.index_select(0, keep).to(dtype)
    y = labels.index_select(0, keep)
    w = weight.to(dtype)
    vocab = w.shape[0]
    total = torch.zeros((), dtype=torch.float32, device=device)
    grad_h = torch.empty_like(h) if need_h else None
    # dL/dW is accumulated transposed, (d, V): hᵀ @ P writes it row-major, the faster layout for a
    # reduction over the chunk's rows (≈ 1.3x over Pᵀ @ h into (V, d), measured on CPU).
    grad_wt = torch.zeros(w.shape[1], vocab, dtype=torch.float32, device=device) if need_w else None
    # One logits buffer for all chunks: a fresh chunk × vocab tensor per chunk would be page-faulted
    # in (and zeroed by the kernel) every time, which costs as much as the math on CPU.
    buf = torch.empty(min(chunk_size, max(n, 1)), vocab, dtype=torch.float32, device=device)
    low = torch.empty(buf.shape, dtype=dtype, device=device) if dtype != torch.float32 else None
    minus_one = torch.full((buf.shape[0], 1), -1.0, dtype=torch.float32, device=device)
    with torch.autocast(device.type, enabled=False):
        for start in range(0, n, chunk_size):
            hc, yc = h[start:start + chunk_size], y[start:start + chunk_size]
            rows = hc.shape[0]
            logits = buf[:rows]
            if low is None:
                torch.mm(hc, w.t(), out=logits)
            else:
                logits.copy_(torch.mm(hc, w.t(), out=low[:rows]))
            target = yc.unsqueeze(1)
            target_logit = logits.gather(1, target)
            # Softmax in place, one fused row-wise kernel: the chunk's logits never exist twice, and it
            # is one pass over the buffer where log-softmax then exp would be two (≈ 40 % less time).
            probs = torch.ops.aten._softmax.out(logits, 1, False, out=logits)
            p_target = probs.gather(1, target)
            # loss = -log p[target] (= logsumexp - logit[target]); exact while p[target] is a normal
            # float. Rows where it underflowed (a target ≳ 87 nats below the best) get their logsumexp
            # recomputed from their logits: rare, and a handful of rows.
            under = p_target < _FLOAT32_TINY
            total -= p_target.clamp_min(_FLOAT32_TINY).log().sum()
            if bool(under.any()):
                rows_u = under.squeeze(1).nonzero().squeeze(1)
                lse = torch.logsumexp((hc.index_select(0, rows_u) @ w.t()).float(), dim=1)
                exact = lse - target_logit.index_select(0, rows_u).squeeze(1)
                total += (exact + p_target.index_select(0, rows_u).clamp_min(_FLOAT32_TINY).log().squeeze(1)).sum()
            if not (need_h or need_w):
                continue
            probs.scatter_add_(1, target, minus_one[:rows])  # softmax - onehot: dL/dlogits times n
            if need_h:
                assert grad_h is not None
                g = probs if low is None else low[:rows].copy_(probs)
                torch.mm(g, w, out=grad_h[start:start + rows])
            if need_w:
                assert grad_wt is not None
                grad_wt.addmm_(hc.t().float(), probs)
    return total, grad_h, grad_wt, keep, n


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``hidden @ weightᵀ`` against ``labels``, its gradients computed in the
    forward chunk by chunk; backward scales them by the incoming gradient."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk_size: int,
                ignore_index: int, need_h: bool, need_w: bool) -> torch.Tensor:
        total, grad_h, grad_wt, keep, n = _chunked_forward(hidden, weight, labels, chunk_size, ignore_index,
                                                           need_h, need_w)
        ctx.n = n
        ctx.hidden_meta = (hidden.shape, hidden.dtype)
        ctx.weight_dtype = weight.dtype
        ctx.save_for_backward(grad_h, grad_wt, keep)
        # No target at all: NaN, like the reference's mean over nothing (and Hugging Face's loss).
        return total / n if n else total * float("nan")

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        grad_h, grad_wt, keep = ctx.saved_tensors
        # Nothing to learn from a chunk without targets: zero gradients, not NaN.
        scale = grad_out.float() / ctx.n if ctx.n else grad_out.float() * 0.0
        shape, dtype = ctx.hidden_meta
        grad_hidden = grad_weight = None
        if ctx.needs_input_grad[0] and grad_h is not None:
            grad_hidden = torch.zeros(shape, dtype=dtype, device=keep.device)
            grad_hidden.index_copy_(0, keep, (grad_h.float() * scale).to(dtype))
        if ctx.needs_input_grad[1] and grad_wt is not None:
            grad_weight = (grad_wt * scale).t().contiguous().to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None, None, None, None, None


def chunked_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                                 chunk_size: int = 2048, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weightᵀ`` (``hidden`` (T, d), ``weight`` (V, d), ``labels`` (T,))
    over non-ignored targets, never holding more than ``chunk_size × V`` logits."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    grad = torch.is_grad_enabled()
    return ChunkedLinearCrossEntropy.apply(hidden, weight, labels, chunk_size, ignore_index,
                                           grad and hidden.requires_grad, grad and weight.requires_grad)


def fused_linear_cross_entropy(hidden: Any, weight: Any, labels: Any, ignore_index: int = IGNORE_INDEX) -> Any:
    """Liger-Kernel's fused linear cross-entropy (CUDA, Triton), mean over non-ignored targets."""
    cls = _liger_loss_class()
    if cls is None:
        raise RuntimeError("cross_entropy 'fused' needs liger-kernel (the train extra installs it)")
    return cls(ignore_index=ignore_index, reduction="mean")(weight, hidden.contiguous(), labels.contiguous())


def linear_cross_entropy(hidden: Any, weight: Any, labels: Any, *, mode: str = "auto", chunk_size: int = 2048,
                         ignore_index: int = IGNORE_INDEX) -> Any:
    """Mean cross-entropy of the LM head ``hidden @ weightᵀ`` over labels that are not ``ignore_index``,
    by the implementation ``mode`` names (see the module docstring); 2-D ``hidden``, 1-D ``labels``."""
    impl = resolve_mode(mode, hidden.device.type)
    if impl == "full":
        return full_linear_cross_entropy(hidden, weight, labels, ignore_index)
    if impl == "fused":
        return fused_linear_cross_entropy(hidden, weight, labels, ignore_index)
    return chunked_linear_cross_entropy(hidden, weight, labels, chunk_size, ignore_index)


def causal_lm_loss(hidden: Any, weight: Any, labels: Any, *, mode: str = "auto", chunk_size: int = 2048,
                   ignore_index: int = IGNORE_INDEX) -> Any:
    """The causal-LM loss of ``hidden`` (B, N, d) against unshifted ``labels`` (B, N), Hugging Face's
    convention: position t predicts ``labels[t + 1]``; a row's last position predicts nothing."""
    shifted = torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), ignore_index)], dim=1)
    return linear_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), weight, shifted.reshape(-1),
                                mode=mode, chunk_size=chunk_size, ignore_index=ignore_index)
