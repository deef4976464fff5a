"""The PyTorch references and the backend selector agree with each other (CPU, eager)."""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():  # importing the package defines the Triton kernels: interpreter on CPU
    os.environ.setdefault("TRITON_INTERPRET", "1")

from ipt_engine.kernels.backends import BACKENDS, attention  # noqa: E402
from ipt_engine.kernels.metadata import build_packed_metadata  # noqa: E402
from ipt_engine.kernels.reference import (  # noqa: E402
    dense_document_mask,
    reference_attention,
    sdpa_dense_attention,
)

LENS = [1, 17, 5, 33, 16, 2]


def inputs(hq=4, hkv=2, head_dim=32, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    total = sum(LENS)
    cu = torch.tensor([0] + torch.tensor(LENS).cumsum(0).tolist(), dtype=torch.int32)
    return (*(torch.randn(total, h, head_dim, generator=gen, dtype=dtype) for h in (hq, hkv, hkv)), cu)


def naive(q, k, v, cu, causal=True):
    """Every query row on its own: softmax over exactly the keys it may see."""
    groups = q.shape[1] // k.shape[1]
    out = torch.empty_like(q, dtype=torch.float64)
    bounds = cu.tolist()
    for s, e in zip(bounds[:-1], bounds[1:]):
        for i in range(s, e):
            last = i + 1 if causal else e
            for h in range(q.shape[1]):
                scores = (k[s:last, h // groups].double() @ q[i, h].double()) / q.shape[-1] ** 0.5
                out[i, h] = torch.softmax(scores, 0) @ v[s:last, h // groups].double()
    return out


@pytest.mark.parametrize("causal", [True, False])
def test_reference_matches_row_by_row_definition(causal):
    q, k, v, cu = inputs(hq=2, hkv=1)
    torch.testing.assert_close(reference_attention(q.double(), k.double(), v.double(), cu, causal=causal),
                               naive(q, k, v, cu, causal))


@pytest.mark.parametrize("backend", ["sdpa_dense", "sdpa_segments", "flex", "reference"])
@pytest.mark.parametrize("hq,hkv", [(2, 2), (4, 2), (4, 1)])
def test_backends_agree_with_reference_forward_and_backward(backend, hq, hkv):
    q, k, v, cu = inputs(hq, hkv)
    ref = [x.double().requires_grad_() for x in (q, k, v)]
    ref_out = reference_attention(*ref, cu)
    ref_out.sum().backward()
    ours = [x.clone().requires_grad_() for x in (q, k, v)]
    out = attention(*ours, cu, backend=backend)
    out.sum().backward()
    torch.testing.assert_close(out.double(), ref_out.detach(), atol=1e-5, rtol=1e-5)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.grad.double(), b.grad, atol=1e-4, rtol=1e-4)


def test_attention_accepts_packed_metadata():
    meta = build_packed_metadata(torch.tensor([[3, 4], [7, 0]]), 8)
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(16, 2, 32, generator=gen) for _ in range(3))
    torch.testing.assert_close(attention(q, k, v, meta, backend="sdpa_dense"),
                               attention(q, k, v, meta.cu_seqlens, backend="reference"))


def test_dense_mask_is_block_diagonal_causal():
    mask = dense_document_mask(torch.tensor([0, 2, 5], dtype=torch.int32), 5)
    expected = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 1]])
    assert torch.equal(mask, expected.bool())


def test_sdpa_dense_accepts_a_prebuilt_mask():
    q, k, v, cu = inputs()
    mask = dense_document_mask(cu, q.shape[0])
    torch.testing.assert_close(sdpa_dense_attention(q, k, v, cu, mask=mask), sdpa_dense_attention(q, k, v, cu))


def test_unknown_backend_raises_value_error():
    q, k, v, cu = inputs()
    with pytest.raises(ValueError, match="unknown attention backend"):
        attention(q, k, v, cu, backend="nope")
    assert set(BACKENDS) == {"packed", "flex", "sdpa_dense", "sdpa_segments", "reference"}
