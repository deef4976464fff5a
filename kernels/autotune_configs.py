"""The packed-attention kernels' autotune space, and the part of it each GPU generation is offered.

The autotuner of each kernel searches one inner block size x warps x pipeline stages. Not every
point fits every GPU: compiled ahead of time for sm_90 and sm_80 (``python -m benchmarks.kernels_aot``,
results in ``benchmarks/results/kernels-aot-*.json``, table in ``docs/kernels.md``), some configs spill
registers to local memory or ask for more shared memory than a block may have. The autotuner would time
a spilling config and could pick it, and one over the shared-memory limit fails at launch, so
``offered_configs`` removes both before the autotuner sees them, per kernel, head dim and target.
``tests/test_kernels_aot.py`` compiles the offered space for both targets and checks it against the
committed sweep.

Kept apart from the kernels: Triton keys its compile cache on a kernel's source line numbers, so
editing these rules leaves the kernels' cached binaries valid.
"""

from __future__ import annotations

import functools

import triton

# The inner block each autotuned kernel searches, and the sizes it may take. The plan's block (BLOCK_M
# for forward / dQ, BLOCK_N for dK/dV) is fixed per head dim by the launcher, not tuned.
TUNED_BLOCKS = {
    "fwd": ("BLOCK_N", (32, 64, 128)),
    "bwd_dkdv": ("BLOCK_M", (32, 64)),
    "bwd_dq": ("BLOCK_N", (32, 64)),
}
NUM_WARPS, NUM_STAGES = (4, 8), (2, 3, 4)
# Largest dynamic shared memory one block may request (opt-in maximum): 227 KiB on sm_90, 163 KiB on sm_80.
SHARED_LIMIT_BYTES = {90: 227 * 1024, 80: 163 * 1024}


def autotune_space(kernel: str) -> list[triton.Config]:
    """Every config the autotuner of ``kernel`` ("fwd", "bwd_dkdv", "bwd_dq") is built with."""
    name, sizes = TUNED_BLOCKS[kernel]
    return [
        triton.Config({name: size}, num_warps=warps, num_stages=stages)
        for size in sizes
        for warps in NUM_WARPS
        for stages in NUM_STAGES
    ]


def config_key(config: triton.Config) -> tuple[int, int, int]:
    """Hashable identity of a config: (inner block size, num_warps, num_stages)."""
    (size,) = config.kwargs.values()
    return size, config.num_warps, config.num_stages


def offered_configs(kernel: str, head_dim: int, capability: int) -> set[tuple[int, int, int]]:
    """Keys (block, warps, stages) of the configs the autotuner may try for this head dim and GPU.

    ``capability`` is ``10 * major + minor`` (90 = H100, 80 = A100; others get the sm_80 rules, the
    more constrained of the two). A config is offered when its estimated shared memory fits the target
    and the sweep found it spill-free; head dims 16 / 32 follow 64 and 256 follows 128 (not swept).
    """
    cap = 90 if capability >= 90 else 80
    limit = SHARED_LIMIT_BYTES[cap]
    plan = plan_block(kernel, head_dim, cap)
    offered = set()
    for config in autotune_space(kernel):
        size, warps, stages = config_key(config)
        if shared_estimate(kernel, plan, size, head_dim, stages) > limit:
            continue
        if _spills(kernel, min(max(head_dim, 64), 128), cap, size, warps, stages):
            continue
        offered.add((size, warps, stages))
    return offered


def shared_estimate(kernel: str, plan: int, size: int, head_dim: int, stages: int) -> int:
    """Bytes of shared memory a config asks for (16-bit inputs): the program's resident tiles plus
    ``stages`` buffers of the streamed tiles (and, for dK/dV, of the rows' fp32 LSE and Delta).

    Equals the sm_90 compiles (e.g. forward D 128, BLOCK_N 128, 4 stages: 32 KiB of Q + 4 x 64 KiB of
    K and V = 288 KiB against 227); sm_80 buffers one stage less, so there it errs on the safe side.
    ``tests/test_kernels_aot.py`` checks it against every compiled config.
    """
    resident = (1 if kernel == "fwd" else 2) * plan * head_dim * 2  # Q; Q and dO; or K and V
    streamed = stages * 2 * size * head_dim * 2  # K and V; K and V; or Q and dO per stage
    if kernel == "bwd_dkdv":
        streamed += stages * size * 2 * 4  # LSE and Delta rows, fp32
    return resident + streamed


def _spills(kernel: str, head_dim: int, capability: int, size: int, warps: int, stages: int) -> bool:
    """Register spills measured by the ahead-of-time sweep (bf16; fp16 is identical), as rules."""
    if kernel == "fwd":
        if warps == 4:  # 128 threads hold a 128-row fp32 accumulator: spills from D 128 or 128-key tiles
            return head_dim >= 128 or size >= 128
        return capability < 90 and head_dim >= 128 and size >= 128  # sm_80: 72 B at D 128, 128 keys
    if kernel == "bwd_dq":  # dQ accumulator plus the resident Q and dO tiles
        if warps == 4:  # 140-2276 B at D 128; 72 B on sm_80 with 64-key tiles
            return head_dim >= 128 or (capability < 90 and size >= 64)
        return capability < 90 and head_dim >= 128 and size >= 64  # sm_80: 128 B
    # dK/dV: two fp32 accumulators and the K, V tiles stay in registers for the whole program.
    if warps == 4:
        return True  # 8 B to 118 KB at all but two points of the space
    if capability >= 90:
        return head_dim >= 128 and size >= 64 and stages > 2  # 16-88 B
    # sm_80: 16-40 B at D 64 (128-key plan), 8-32 B at D 128 (64-key plan) with 3-4 stages.
    return size >= 64 and (head_dim <= 64 or stages > 2)


# The block the launcher tiles the work plan by (not tuned): BLOCK_M for forward / dQ, BLOCK_N for dK/dV.
PLAN_BLOCKS = {"fwd": "BLOCK_M", "bwd_dkdv": "BLOCK_N", "bwd_dq": "BLOCK_M"}


def plan_block(kernel: str, head_dim: int, capability: int) -> int:
    """Rows (forward / dQ) or keys (dK/dV) per program for this head dim and GPU."""
    if head_dim >= 256:
        return 64  # 128 rows x 256 dims of fp32 accumulator would spill
    if kernel == "bwd_dkdv" and capability < 90 and head_dim >= 128:
        # mma.sync keeps the dK and dV fp32 accumulators (2 x 128 x 128) and the K, V operand tiles in
        # registers: with 128 keys every sm_80 config spills (16 B to 118 KB); 64 keys fit.
        return 64
    return 128


@functools.lru_cache(maxsize=1)
def device_capability() -> int:
    """``10 * major + minor`` of the current CUDA device, read once."""
    import torch

    major, minor = torch.cuda.get_device_capability()
    return 10 * major + minor
