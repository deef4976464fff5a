"""GPU readiness without a GPU: the autotune space offered on sm_90 / sm_80 compiles and fits.

The compile test runs ``python -m ipt_engine.kernels.aot`` in a subprocess: the suite sets
``TRITON_INTERPRET=1``, under which Triton hands out interpreter stand-ins instead of compilable
kernels, so the child runs without it. Triton's cache lives in ``.cache/triton-aot`` (git-ignored) and
is kept between runs; a cold run compiles about a hundred configs (2-3 min on 2 cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
pytest.importorskip("torch")

from ipt_engine.kernels.aot import EXPECTED_MMA, HEAD_DIMS, KERNELS, TARGETS, detect_mma, uses_dot  # noqa: E402
from ipt_engine.kernels.autotune_configs import SHARED_LIMIT_BYTES, TUNED_BLOCKS, offered_configs  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


def _committed_sweep() -> list[dict]:
    found = sorted(RESULTS.glob("kernels-aot-*.json"))
    assert found, "no benchmarks/results/kernels-aot-*.json: run `python -m benchmarks.kernels_aot`"
    return json.loads(found[-1].read_text())["rows"]


def _key(row: dict) -> tuple[int, int, int]:
    name = TUNED_BLOCKS[row["kernel"]][0]
    return row["config"][name], row["config"]["num_warps"], row["config"]["num_stages"]


@pytest.fixture(scope="module")
def pruned_rows(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("aot") / "rows.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-m", "ipt_engine.kernels.aot", "--space", "pruned", "--dtype", "bfloat16",
         "--workers", str(min(2, os.cpu_count() or 1)), "--json", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert out.exists(), f"aot compile wrote nothing (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    return json.loads(out.read_text())


def test_offered_space_compiles_without_spills_within_shared_memory_on_tensor_cores(pruned_rows):
    for row in pruned_rows:
        where = f"{row['target']} {row['kernel']} {row['variant']} D{row['head_dim']} {row['config']}"
        assert not row.get("error"), f"{where}: {row.get('error')}"
        assert row["spill_bytes"] == 0, f"{where}: spills {row['spill_bytes']} B"
        assert row["shared_bytes"] <= SHARED_LIMIT_BYTES[TARGETS[row["target"]]], f"{where}: {row['shared_bytes']} B"
        if uses_dot(row["kernel"]):
            assert row["mma"] == EXPECTED_MMA[TARGETS[row["target"]]], f"{where}: MMA {row['mma']}"
        assert row["regs"] > 0


def test_offered_space_is_covered_for_every_kernel_head_dim_and_target(pruned_rows):
    seen = {(r["target"], r["kernel"], r["head_dim"]) for r in pruned_rows}
    assert seen == {(t, k, d) for t in TARGETS for k in KERNELS for d in HEAD_DIMS}
    for target, capability in TARGETS.items():
        for kernel in TUNED_BLOCKS:
            for dim in HEAD_DIMS:
                compiled = {_key(r) for r in pruned_rows if (r["target"], r["kernel"], r["head_dim"]) == (target, kernel, dim)}
                assert compiled == offered_configs(kernel, dim, capability)


def test_offered_configs_exclude_every_config_the_committed_sweep_flags():
    rows = _committed_sweep()
    flagged = [r for r in rows if r["kernel"] in TUNED_BLOCKS and not r.get("ok")]
    assert flagged, "the full sweep flags spilling / oversized configs; none found: wrong file?"
    for row in flagged:
        offered = offered_configs(row["kernel"], row["head_dim"], TARGETS[row["target"]])
        assert _key(row) not in offered, f"offered but flagged: {row}"
    # And every offered config was measured by the sweep (for every variant of its kernel).
    measured = {(r["target"], r["kernel"], r["variant"], r["head_dim"], _key(r)) for r in rows if r["kernel"] in TUNED_BLOCKS}
    variants = {(r["kernel"], r["variant"]) for r in rows}
    for target, capability in TARGETS.items():
        for kernel, variant in variants:
            if kernel not in TUNED_BLOCKS:
                continue
            for dim in HEAD_DIMS:
                for key in offered_configs(kernel, dim, capability):
                    assert (target, kernel, variant, dim, key) in measured


def test_offered_space_is_never_empty():
    for capability in TARGETS.values():
        for kernel in TUNED_BLOCKS:
            for dim in (16, 32, 64, 128, 256):
                assert offered_configs(kernel, dim, capability), (kernel, dim, capability)


def test_mma_detection_reads_the_ptx_mnemonics():
    assert detect_mma("\twgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%f1}, ...") == "wgmma"
    assert detect_mma("\tmma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f1}, ...") == "mma.sync"
    assert detect_mma("\tfma.rn.f32 %f1, %f2, %f3, %f4;\n\tld.global.v4.b32 {%r1}, [%rd1];") is None


def test_shared_memory_estimate_never_undershoots_a_compiled_config():
    from ipt_engine.kernels.autotune_configs import PLAN_BLOCKS, shared_estimate

    rows = [r for r in _committed_sweep() if r["kernel"] in TUNED_BLOCKS and not r.get("error")]
    for row in rows:
        plan = row["config"][PLAN_BLOCKS[row["kernel"]]]
        size = _key(row)[0]
        estimate = shared_estimate(row["kernel"], plan, size, row["head_dim"], row["config"]["num_stages"])
        assert estimate >= row["shared_bytes"], row
