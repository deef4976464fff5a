"""lm-evaluation-harness task definitions shipped with ipt-engine (an ``include_path`` directory)."""
