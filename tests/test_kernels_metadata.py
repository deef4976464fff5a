"""Packed-batch metadata: the PyTorch path against a plain-Python model, and the Triton kernel against it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
CUDA = torch.cuda.is_available()
if not CUDA:  # must precede the kernels' import: Triton picks the interpreter when it decorates them
    os.environ.setdefault("TRITON_INTERPRET", "1")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from ipt_engine.kernels.metadata import build_packed_metadata  # noqa: E402

TRITON_RUNS = CUDA or os.environ.get("TRITON_INTERPRET") == "1"


def python_model(doc_lens: list[list[int]], seq_len: int):
    """The definition, token by token."""
    cu, positions, labels = [0], [], []
    for row_index, row in enumerate(doc_lens):
        segments = [n for n in row if n > 0]
        used = sum(segments)
        if seq_len - used > 0:
            segments.append(seq_len - used)
        pos_row, label_row = [], []
        for seg_index, length in enumerate(segments):
            cu.append(cu[-1] + length)
            is_pad = used < seq_len and seg_index == len(segments) - 1
            for i in range(length):
                pos_row.append(i)
                label_row.append(not is_pad and i + 1 < length)
        positions.append(pos_row)
        labels.append(label_row)
        assert cu[-1] == (row_index + 1) * seq_len
    max_seqlen = max((b - a for a, b in zip(cu[:-1], cu[1:])), default=0)
    return cu, max_seqlen, positions, labels


@st.composite
def batches(draw, max_rows=4, max_seq=48):
    seq_len = draw(st.integers(1, max_seq))
    rows = draw(st.integers(1, max_rows))
    max_docs = draw(st.integers(0, 8))
    doc_lens = []
    for _ in range(rows):
        left, row = seq_len - draw(st.integers(0, seq_len)), []  # leave a random padding tail
        for _ in range(max_docs):
            n = draw(st.integers(0, left))
            row.append(n)
            left -= n
        doc_lens.append(row)
    return doc_lens, seq_len


def check(meta, doc_lens, seq_len):
    cu, max_seqlen, positions, labels = python_model(doc_lens, seq_len)
    assert meta.cu_seqlens.dtype == torch.int32 and meta.cu_seqlens.tolist() == cu
    assert meta.max_seqlen == max_seqlen
    assert meta.position_ids.dtype == torch.int64 and meta.position_ids.tolist() == positions
    assert meta.label_mask.dtype == torch.bool and meta.label_mask.tolist() == labels
    assert meta.total_tokens == len(doc_lens) * seq_len


@settings(max_examples=200, deadline=None)
@given(batches())
def test_torch_path_matches_definition(batch):
    doc_lens, seq_len = batch
    tensor = torch.tensor(doc_lens, dtype=torch.int32).reshape(len(doc_lens), -1)
    check(build_packed_metadata(tensor, seq_len, impl="torch"), doc_lens, seq_len)


@settings(max_examples=200, deadline=None)
@given(batches(), st.sampled_from([torch.int32, torch.int64]))
def test_numpy_path_matches_definition(batch, dtype):
    doc_lens, seq_len = batch
    tensor = torch.tensor(doc_lens, dtype=dtype).reshape(len(doc_lens), -1)
    check(build_packed_metadata(tensor, seq_len, impl="numpy"), doc_lens, seq_len)
    check(build_packed_metadata(tensor, seq_len), doc_lens, seq_len)  # auto on CPU


@pytest.mark.skipif(not TRITON_RUNS, reason="needs CUDA or TRITON_INTERPRET=1")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy, from inside Triton's interpreter
@settings(max_examples=12 if not CUDA else 100, deadline=None)
@given(batches(max_rows=3, max_seq=40))
def test_triton_kernel_matches_torch_path(batch):
    doc_lens, seq_len = batch
    device = "cuda" if CUDA else "cpu"
    tensor = torch.tensor(doc_lens, dtype=torch.int64).reshape(len(doc_lens), -1).to(device)
    ours = build_packed_metadata(tensor, seq_len, impl="triton")
    check(ours, doc_lens, seq_len)


@pytest.mark.skipif(not TRITON_RUNS, reason="needs CUDA or TRITON_INTERPRET=1")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_triton_kernel_many_documents_and_long_rows():
    # More documents than one chunk of the kernel and more tokens than one token chunk.
    seq_len = 300
    doc_lens = [[1] * 70 + [3] * 40 + [0, 0, 5], [200, 0, 99, 1] + [0] * 109]
    device = "cuda" if CUDA else "cpu"
    tensor = torch.tensor(doc_lens, dtype=torch.int32, device=device)
    check(build_packed_metadata(tensor, seq_len, impl="triton"), doc_lens, seq_len)
    check(build_packed_metadata(tensor.cpu(), seq_len), doc_lens, seq_len)


@pytest.mark.parametrize(
    "doc_lens,seq_len,message",
    [
        ([[3, 2]], 4, "seq_len"),
        ([[3, -1]], 4, "negative"),
        ([3, 1], 4, r"\[B, max_docs\]"),
        ([[1.0, 2.0]], 4, "integer"),
        ([[1, 2]], 0, "seq_len must be"),
    ],
)
def test_invalid_doc_lens_raise_value_error(doc_lens, seq_len, message):
    with pytest.raises(ValueError, match=message):
        build_packed_metadata(torch.tensor(doc_lens), seq_len)


def test_layout_contract_example():
    meta = build_packed_metadata(torch.tensor([[3, 0, 2], [8, 0, 0]]), 8)
    assert meta.cu_seqlens.tolist() == [0, 3, 5, 8, 16]  # row 0's 3-token padding tail is a segment
    assert meta.position_ids.tolist() == [[0, 1, 2, 0, 1, 0, 1, 2], list(range(8))]
    assert meta.label_mask.tolist() == [
        [True, True, False, True, False, False, False, False],
        [True] * 7 + [False],
    ]


def test_package_root_does_not_import_torch():
    code = "import sys, ipt_engine; assert 'torch' not in sys.modules and 'triton' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
