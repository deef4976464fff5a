"""Document-masked (packed-sequence) attention for training: Triton kernels and PyTorch references.

Installed as ``ipt_engine.kernels`` (never import it as a bare ``kernels``: that is another package).

* :func:`packed_attention` - Triton forward + backward, ``flash_attn_varlen_func`` layout, GQA.
* :func:`~ipt_engine.kernels.metadata.build_packed_metadata` - ``cu_seqlens``, position ids and the
  label mask from a batch's ``doc_lens``.
* :func:`~ipt_engine.kernels.backends.attention` - pick ``packed`` / ``flex`` / ``sdpa_dense`` /
  ``reference`` by name.
"""

from .backends import BACKENDS, attention
from .metadata import PackedMetadata, build_packed_metadata
from .packed_attention import packed_attention

__all__ = ["BACKENDS", "PackedMetadata", "attention", "build_packed_metadata", "packed_attention"]
