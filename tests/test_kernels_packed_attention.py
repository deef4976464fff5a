"""Packed (document-masked) attention kernels against the float64 per-document reference.

On CPU the Triton kernels run in the interpreter (``TRITON_INTERPRET=1``, set by ``scripts/test.sh`` and
here when unset) at tiny shapes; with CUDA the same tests run at real sizes in fp16 / bf16 / fp32.
"""

from __future__ import annotations

import importlib
import os
import random

import pytest

torch = pytest.importorskip("torch")
CUDA = torch.cuda.is_available()
if not CUDA:  # must precede the kernels' import: Triton picks the interpreter when it decorates them
    os.environ.setdefault("TRITON_INTERPRET", "1")

from ipt_engine.kernels import packed_attention  # noqa: E402
from ipt_engine.kernels.reference import reference_attention  # noqa: E402

pa = importlib.import_module("ipt_engine.kernels.packed_attention")
DEVICE = "cuda" if CUDA else "cpu"
pytestmark = [
    pytest.mark.skipif(
        not (CUDA or pa.INTERPRET),
        reason="Triton kernels need CUDA, or TRITON_INTERPRET=1 set before ipt_engine.kernels is imported",
    ),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # numpy, from inside Triton's interpreter
]

# Document mixes. Interpreter: ~100 tokens, tiles of 16. CUDA: thousands of tokens, tiles of 64-128.
if CUDA:
    MIXES = {
        "mixed": [1, 127, 128, 129, 3, 1000, 64, 2, 517],
        "one_document": [2048],
        "many_tiny": [1, 2, 3, 5, 7] * 60,
        "long_tailed": None,  # drawn below
    }
    TOTAL_RANDOM, HEAD_DIMS, DTYPES = 4096, (64, 128), (torch.float16, torch.bfloat16, torch.float32)
else:
    MIXES = {
        "mixed": [1, 17, 5, 33, 16, 2],  # length 1, not tile multiples, one exact tile, > 2 tiles
        "one_document": [70],
        "many_tiny": [1, 2, 1, 3, 1, 1, 4, 2, 1, 5, 1, 2],
        "long_tailed": None,
    }
    TOTAL_RANDOM, HEAD_DIMS, DTYPES = 90, (32,), (torch.float32,)

# (output atol/rtol, gradient atol/rtol), relative to the reference's largest magnitude.
TOLERANCES = {
    torch.float32: ((2e-5, 2e-5), (5e-5, 5e-5)),
    torch.float16: ((2e-3, 2e-3), (1e-2, 1e-2)),
    torch.bfloat16: ((1.6e-2, 1.6e-2), (4e-2, 4e-2)),
}
GQA = [(2, 2), (4, 2), (4, 1)]  # (q heads, k/v heads): ratios 1, 2, 4


def long_tailed(total: int, seed: int) -> list[int]:
    """Lengths like a packed corpus: many short documents, a few long ones, summing to ``total``."""
    rng = random.Random(seed)
    lens, left = [], total
    while left > 0:
        length = min(left, max(1, int(rng.paretovariate(1.2) * total / 40)))
        lens.append(length)
        left -= length
    rng.shuffle(lens)
    return lens


def lengths_of(mix: str) -> list[int]:
    return long_tailed(TOTAL_RANDOM, seed=7) if MIXES[mix] is None else MIXES[mix]


def cu_of(lens: list[int]) -> torch.Tensor:
    bounds = [0]
    for length in lens:
        bounds.append(bounds[-1] + length)
    return torch.tensor(bounds, dtype=torch.int32, device=DEVICE)


def make_inputs(lens, hq, hkv, head_dim, dtype, seed=0):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    total = sum(lens)
    q, k, v, do = (torch.randn(total, h, head_dim, generator=gen).to(DEVICE, dtype) for h in (hq, hkv, hkv, hq))
    return q, k, v, do


def run_packed(q, k, v, do, cu, **kwargs):
    q, k, v = (x.detach().clone().requires_grad_() for x in (q, k, v))
    out = packed_attention(q, k, v, cu, **kwargs)
    out.backward(do)
    return out.detach(), q.grad, k.grad, v.grad


def run_reference(q, k, v, do, cu, causal=True):
    q, k, v = (x.detach().to(torch.float64).requires_grad_() for x in (q, k, v))
    out = reference_attention(q, k, v, cu, causal=causal)
    out.backward(do.to(torch.float64))
    return out.detach(), q.grad, k.grad, v.grad


def assert_matches(ours, ref, dtype):
    (out_atol, out_rtol), (grad_atol, grad_rtol) = TOLERANCES[dtype]
    for name, a, b, atol, rtol in zip(
        ("out", "dq", "dk", "dv"), ours, ref, (out_atol,) + (grad_atol,) * 3, (out_rtol,) + (grad_rtol,) * 3
    ):
        assert a.dtype == dtype, name
        assert torch.isfinite(a).all(), f"{name} has NaN/inf"
        scale = b.abs().max().item()
        err = (a.to(torch.float64) - b).abs().max().item()
        assert err <= atol * max(scale, 1.0) + rtol * scale, f"{name}: max error {err:.3g} (ref max {scale:.3g})"


@pytest.mark.parametrize("hq,hkv", GQA)
@pytest.mark.parametrize("mix", list(MIXES))
def test_forward_backward_match_reference(mix, hq, hkv):
    lens = lengths_of(mix)
    cu = cu_of(lens)
    for dtype in DTYPES:
        for head_dim in HEAD_DIMS:
            q, k, v, do = make_inputs(lens, hq, hkv, head_dim, dtype)
            ours = run_packed(q, k, v, do, cu, max_seqlen=max(lens), deterministic=hkv != hq)
            assert_matches(ours, run_reference(q, k, v, do, cu), dtype)


@pytest.mark.parametrize("causal", [True, False])
def test_gqa_atomic_and_bidirectional(causal):
    lens = lengths_of("mixed")
    cu = cu_of(lens)
    dtype = DTYPES[0]
    q, k, v, do = make_inputs(lens, 4, 2, HEAD_DIMS[0], dtype, seed=1)
    ours = run_packed(q, k, v, do, cu, causal=causal, deterministic=False)
    assert_matches(ours, run_reference(q, k, v, do, cu, causal=causal), dtype)


@pytest.mark.parametrize("head_dim", [16, 64] if not CUDA else [32, 256])
def test_other_head_dims_and_scale(head_dim):
    lens = [9, 24, 1] if not CUDA else [300, 1000, 1, 700]
    cu = cu_of(lens)
    dtype = DTYPES[0]
    q, k, v, do = make_inputs(lens, 2, 1, head_dim, dtype, seed=2)
    q2, k2, v2 = (x.detach().clone().requires_grad_() for x in (q, k, v))
    out = packed_attention(q2, k2, v2, cu, softmax_scale=0.3)
    out.backward(do)
    # A custom scale is the default scale on rescaled queries.
    ref = run_reference(q * (0.3 * head_dim**0.5), k, v, do, cu)
    ref_dq = ref[1] * (0.3 * head_dim**0.5)
    assert_matches((out.detach(), q2.grad, k2.grad, v2.grad), (ref[0], ref_dq, ref[2], ref[3]), dtype)


def test_lse_matches_reference():
    lens = lengths_of("mixed")
    cu = cu_of(lens)
    q, k, v, _ = make_inputs(lens, 4, 2, HEAD_DIMS[0], torch.float32, seed=3)
    out, lse, _ = pa._forward(q, k, v, cu, max(lens), HEAD_DIMS[0] ** -0.5, True)
    ref_out, ref_lse = reference_attention(q, k, v, cu, return_lse=True)
    torch.testing.assert_close(lse.double(), ref_lse, atol=1e-4, rtol=1e-5)


def test_outputs_poisoned_before_the_call_are_fully_overwritten(monkeypatch):
    def poisoned(shape, dtype, device):
        return torch.full(shape, float("nan"), dtype=dtype, device=device)

    monkeypatch.setattr(pa, "_empty", poisoned)
    lens = lengths_of("many_tiny") + lengths_of("mixed")
    cu = cu_of(lens)
    dtype = DTYPES[0]
    for hq, hkv in ((2, 2), (4, 1)):
        q, k, v, do = make_inputs(lens, hq, hkv, HEAD_DIMS[0], dtype, seed=4)
        ours = run_packed(q, k, v, do, cu, deterministic=True)
        assert_matches(ours, run_reference(q, k, v, do, cu), dtype)


def test_other_documents_are_never_read():
    """NaN in every input of the outer documents must not reach the middle document's results.

    A load outside a tile's own document would pull NaN in even where the score is masked (0 * NaN is
    NaN in P @ V and in every gradient product), so this fails if any bound strays past a boundary.
    """
    dtype = DTYPES[0]
    lens = [21, 37, 9] if not CUDA else [1000, 777, 300]
    cu = cu_of(lens)
    a, b = lens[0], lens[0] + lens[1]
    for hq, hkv, deterministic in ((4, 1, True), (4, 2, False)):  # k/v-head programs; atomic q-head ones
        q, k, v, do = make_inputs(lens, hq, hkv, HEAD_DIMS[0], dtype, seed=5)
        clean = run_packed(q, k, v, do, cu, deterministic=deterministic)
        for x in (q, k, v, do):
            x[:a] = float("nan")
            x[b:] = float("nan")
        dirty = run_packed(q, k, v, do, cu, deterministic=deterministic)
        for c, d in zip(clean, dirty):
            assert torch.isfinite(d[a:b]).all()
            torch.testing.assert_close(d[a:b], c[a:b], atol=0, rtol=0)


def test_forward_loads_exactly_the_causal_triangle():
    """The kernel's own record of loaded key tokens equals, per program, [doc start, last row + 1)."""
    lens = lengths_of("mixed") + lengths_of("many_tiny")
    cu = cu_of(lens)
    hq = 2
    q, k, v, _ = make_inputs(lens, hq, 1, HEAD_DIMS[0], DTYPES[0], seed=6)
    _, _, (plan, visits) = pa._forward(q, k, v, cu, max(lens), HEAD_DIMS[0] ** -0.5, True, trace=True)
    block_m = pa._fwd_block_m(HEAD_DIMS[0])
    bounds = cu.tolist()
    expected = torch.zeros_like(visits)
    for pid in range(visits.shape[0]):
        doc, start = plan[pid // hq].tolist()
        if doc >= 0:
            expected[pid, bounds[doc]:min(start + block_m, bounds[doc + 1])] = 1
    assert torch.equal(visits, expected)  # every needed key once, nothing else (no earlier document)


def test_deterministic_backward_is_bitwise_reproducible():
    lens = lengths_of("mixed")
    cu = cu_of(lens)
    dtype = DTYPES[0]
    q, k, v, do = make_inputs(lens, 4, 1, HEAD_DIMS[0], dtype, seed=8)
    first = run_packed(q, k, v, do, cu, deterministic=True)
    second = run_packed(q, k, v, do, cu, deterministic=True)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_tile_plan_covers_every_token_once():
    lens = [1, 17, 5, 33, 16, 2, 0, 40]
    cu = cu_of(lens)
    total = sum(lens)
    for block in (16, 64):
        for queries in (True, False):
            plan = pa.tile_plan(cu, total, block, True, queries=queries).cpu()
            covered = torch.zeros(total, dtype=torch.int64)
            bounds = cu.tolist()
            for doc, start in plan.tolist():
                if doc >= 0:
                    covered[start:min(start + block, bounds[doc + 1])] += 1
                    assert bounds[doc] <= start < bounds[doc + 1]
            assert torch.equal(covered, torch.ones(total, dtype=torch.int64))


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda q, k, v, cu: (q[..., :24].contiguous(), k[..., :24].contiguous(), v[..., :24].contiguous(), cu),
         "head_dim"),
        (lambda q, k, v, cu: (q[:, :3], k, v, cu), "multiple"),
        (lambda q, k, v, cu: (q, k, v, cu.long()), "int32"),
        (lambda q, k, v, cu: (q.double(), k.double(), v.double(), cu), "dtype"),
        (lambda q, k, v, cu: (q[:-1], k, v, cu), "total_tokens"),
        (lambda q, k, v, cu: (q, k, v[:, :, :16], cu), "shapes differ"),
    ],
)
def test_unsupported_inputs_raise_value_error(change, message):
    q, k, v, _ = make_inputs([5, 7], 4, 2, 32, torch.float32)
    with pytest.raises(ValueError, match=message):
        packed_attention(*change(q, k, v, cu_of([5, 7])))


@pytest.mark.skipif(CUDA, reason="host-side cu_seqlens checks run for CPU tensors only")
def test_inconsistent_cu_seqlens_raise_value_error():
    q, k, v, _ = make_inputs([5, 7], 2, 2, 32, torch.float32)
    with pytest.raises(ValueError, match="cu_seqlens"):
        packed_attention(q, k, v, torch.tensor([0, 5, 11], dtype=torch.int32))


def test_non_contiguous_inputs():
    lens = [7, 20]
    cu = cu_of(lens)
    dtype = DTYPES[0]
    qkv = torch.randn(sum(lens), 3, 2, 32, dtype=dtype, device=DEVICE)  # fused projection layout
    q, k, v = qkv.unbind(1)
    do = torch.randn(sum(lens), 2, 32, dtype=dtype, device=DEVICE)
    assert_matches(run_packed(q, k, v, do, cu), run_reference(q, k, v, do, cu), dtype)


def test_torch_compile_fullgraph_traces_the_custom_op():
    lens = [9, 20]
    cu = cu_of(lens)
    q, k, v, do = make_inputs(lens, 2, 1, 32, torch.float32, seed=9)

    def step(q, k, v):
        return packed_attention(q, k, v, cu, max_seqlen=20).sum(dim=-1)

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    qs, ks, vs = (x.clone().requires_grad_() for x in (q, k, v))
    out = compiled(qs, ks, vs)
    out.backward(do.sum(dim=-1))
    ref = run_packed(q, k, v, do.sum(dim=-1, keepdim=True).expand_as(do).contiguous(), cu, max_seqlen=20)
    torch.testing.assert_close(out, ref[0].sum(dim=-1))
    for a, b in zip((qs.grad, ks.grad, vs.grad), ref[1:]):
        torch.testing.assert_close(a, b)


def test_opcheck_forward_op():
    lens = [3, 18]
    cu = cu_of(lens)
    q, k, v, _ = make_inputs(lens, 2, 1, 16, torch.float32, seed=10)
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    torch.library.opcheck(
        torch.ops.ipt_engine.packed_attention_fwd.default, (q, k, v, cu, 18, 0.25, True, False),
        test_utils=("test_schema", "test_faketensor", "test_autograd_registration"),
    )
