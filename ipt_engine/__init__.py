"""ipt-engine: Instruction Pre-Training from raw corpora to trained checkpoints.

The package root stays import-light on purpose: ``ipt --help`` and the pure-Python stages must not pay
for torch, vLLM, Composer or Streaming. Heavy modules are imported inside the functions that need them.
"""

__version__ = "0.1.0"
