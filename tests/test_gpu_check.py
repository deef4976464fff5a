"""The GPU first-run check: its plan (``--dry-run``, on CPU), the attention budget, the float64 reference."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parent.parent


def test_dry_run_prints_every_step_with_sizes_and_fits_eight_minutes(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--dry-run", "--out", str(tmp_path / "o")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    planned = float(re.search(r"planned ([\d.]+) min", lines[0]).group(1))
    assert 0 < planned < 8
    steps = [re.match(r"\s+\d+\. (\w+)\s+~\s*(\d+) s\s+(.+)", line) for line in lines[1:]]
    assert [m.group(1) for m in steps] == ["env", "correctness", "profile", "attention", "train"]
    assert sum(int(m.group(2)) for m in steps) <= planned * 60 + len(steps)
    assert "T 2048/8192/32768" in steps[1].group(3) and "GQA 1/2/4" in steps[1].group(3)
    assert "--budget" in steps[3].group(3)
    assert not (tmp_path / "o").exists()  # a dry run writes nothing


def test_gpu_check_without_a_gpu_is_a_one_line_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--skip", "train"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "CUDA" in proc.stderr


def test_attention_budget_keeps_the_target_case_first_and_fits():
    from benchmarks.attention import MODES, TARGET, full_grid, plan

    grid = full_grid()
    assert grid[0] == (TARGET["mix"], TARGET["total"], TARGET["head_dim"]) and len(set(grid)) == 18
    kept_all, skipped_all = plan(grid, MODES, None)
    assert len(kept_all) == 18 and not skipped_all
    for budget in (150.0, 300.0):
        kept, skipped = plan(grid, MODES, budget)
        assert sum(est for _, est in kept) <= budget
        assert 0 < len(kept) < 18 and len(kept) + len(skipped) == 18
        assert kept[0][0] == grid[0]


def test_per_document_per_head_reference_matches_the_whole_reference():
    from ipt_engine.kernels.reference import reference_attention

    from benchmarks.gpu_check import reference_grads

    gen = torch.Generator().manual_seed(3)
    lens = [5, 17, 1, 9]
    total, hq, hkv, dim = sum(lens), 4, 2, 16
    q, k, v, do = (torch.randn(total, h, dim, generator=gen, dtype=torch.float64) for h in (hq, hkv, hkv, hq))
    cu = torch.tensor([0, 5, 22, 23, 32], dtype=torch.int32)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    out = reference_attention(*leaves, cu)
    out.backward(do)
    ours = reference_grads(q, k, v, do, lens)
    for got, want in zip(ours, [out.detach(), *(x.grad for x in leaves)]):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy, from inside Triton's interpreter
def test_correctness_case_runs_the_kernel_against_float64_on_cpu():
    """The GPU check's own case code, run at toy size (fp32) through the Triton interpreter on CPU."""
    import importlib

    pa = importlib.import_module("ipt_engine.kernels.packed_attention")
    if not (torch.cuda.is_available() or pa.INTERPRET):
        pytest.skip("needs CUDA or TRITON_INTERPRET=1")
    from benchmarks.gpu_check import check_case

    device = "cuda" if torch.cuda.is_available() else "cpu"
    row = check_case("float32", 40, 16, 2, seed=1, with_flex=False, heads_q=2, device=device)
    assert row["ok"], row
    assert row["n_docs"] >= 1 and set(row["rel_err_vs_float64"]) == {"out", "dq", "dk", "dv"}
    assert 0 < max(row["rel_err_vs_float64"].values()) <= 5e-5  # really compared, and close
