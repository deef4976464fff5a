"""Instruction synthesis: the synthesizer's prompt format, response parsing and multi-round planning.

Pure Python, importable from both environments; the engines live in ``ipt_engine.synth.engines``, the drivers that run chains on them in
``ipt_engine.synth.pipelined``, one part of the stage in ``ipt_engine.synth.stage``.
"""

from ipt_engine.synth.parse import parse_pairs
from ipt_engine.synth.planner import Chain, Request, chain_layout, make_measure, plan_chains, split_to_fit
from ipt_engine.synth.prompt import (
    encode_prompt,
    render_context,
    render_example,
    render_pairs,
    render_prompt,
)

__all__ = [
    "Chain",
    "Request",
    "chain_layout",
    "encode_prompt",
    "make_measure",
    "parse_pairs",
    "plan_chains",
    "render_context",
    "render_example",
    "render_pairs",
    "render_prompt",
    "split_to_fit",
]
