"""Templify: render read collections into instruction-augmented pre-training texts.

Pure Python, importable from both environments. See :mod:`ipt_engine.templify.core` for the grouping
rules, :mod:`ipt_engine.templify.render` for the modes and :mod:`ipt_engine.templify.library` for the
template library.
"""

from ipt_engine.templify.core import runs, templify, templify_valid
from ipt_engine.templify.validate import collection_error

__all__ = ["collection_error", "runs", "templify", "templify_valid"]
