"""The Composer model: an HF causal LM fed packed batches, with FLOPs counted honestly.

``forward`` turns the batch's per-row ``doc_lens`` into packed metadata (``cu_seqlens`` over the
microbatch) once, and every attention layer reads it. ``flops_per_batch`` feeds Composer's SpeedMonitor
(MFU): matmul FLOPs for real tokens only, and attention FLOPs over the pairs the document mask allows,
Σ L(L+1)/2 per document, not N² per row, so a packed run is neither flattered by padding nor charged for
cross-document pairs it never computes. The training loss runs without materializing the logits
(:func:`ipt_engine.train.model.attach_lm_loss`, ``model.cross_entropy``).
"""

from __future__ import annotations

from typing import Any

from ipt_engine.train.attention import CONTEXT_KWARG, build_context
from ipt_engine.train.model import attach_lm_loss


def attention_pairs(doc_lens: Any) -> int:
    """Query-key pairs a causal document mask lets through: Σ L(L+1)/2 over all document pieces."""
    lens = doc_lens.to("cpu").long()
    return int((lens * (lens + 1) // 2).sum())


def matmul_params(model: Any) -> int:
    """Parameters that take part in matmuls: all but the input embedding table (a lookup, no FLOPs)."""
    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    tied = out is not None and out.weight is emb
    # A tied table is also the LM head, which is a matmul; count it once, as such.
    return total if tied else total - emb.numel()


def flops_for(config: Any, n_matmul_params: int, tokens: int, pairs: int) -> float:
    """Training FLOPs (forward + backward) for ``tokens`` real tokens and ``pairs`` attended pairs.

    Matmuls: 2 FLOPs per parameter per token forward, twice that backward (6·P·T). Attention: QKᵀ and
    PV are 2·head_dim FLOPs each per pair and head forward (4·head_dim), backward 2.5× the forward
    (recomputing P, then dV, dP, dQ, dK).
    """
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    attn_fwd = 4 * head_dim * heads * config.num_hidden_layers * pairs
    return 6.0 * n_matmul_params * tokens + attn_fwd * 3.5


def _packed_causal_lm_class() -> type:
    from composer.metrics.nlp import LanguageCrossEntropy, LanguagePerplexity
    from composer.models import HuggingFaceModel

    class PackedCausalLM(HuggingFaceModel):
        """HuggingFaceModel whose forward builds packed attention metadata from ``doc_lens``."""

        def __init__(self, model: Any, tokenizer: Any, attn_implementation: str, cross_entropy: str = "auto",
                     cross_entropy_chunk_size: int = 2048):
            super().__init__(
                model,
                tokenizer,
                use_logits=True,
                metrics=None,
                eval_metrics=[LanguageCrossEntropy(), LanguagePerplexity()],
                shift_labels=True,
                allow_embedding_resizing=False,
            )
            self.attn_implementation = attn_implementation
            # Training loss without the logits; eval_forward drops the labels first, so evaluation gets
            # the model's own logits, which LanguageCrossEntropy and LanguagePerplexity read.
            self.cross_entropy = attach_lm_loss(model, cross_entropy, cross_entropy_chunk_size)
            self._n_matmul_params = matmul_params(model)

        def forward(self, batch: dict[str, Any]) -> Any:
            from ipt_engine.kernels.metadata import build_packed_metadata

            input_ids = batch["input_ids"]
            meta = build_packed_metadata(batch["doc_lens"], input_ids.shape[1])
            ctx = build_context(self.attn_implementation, meta, input_ids.device.type)
            return self.model(
                input_ids=input_ids,
                position_ids=batch["position_ids"],
                labels=batch.get("labels"),
                use_cache=False,
                **{CONTEXT_KWARG: ctx},
            )

        def loss(self, outputs: Any, batch: Any) -> Any:
            return outputs["loss"]

        def flops_per_batch(self, batch: dict[str, Any]) -> float:
            doc_lens = batch["doc_lens"]
            tokens = int(doc_lens.sum())
            return flops_for(self.model.config, self._n_matmul_params, tokens, attention_pairs(doc_lens))

    return PackedCausalLM


def build_composer_model(hf_model: Any, tokenizer: Any, attn_implementation: str, cross_entropy: str = "auto",
                         cross_entropy_chunk_size: int = 2048) -> Any:
    """The Composer model around ``hf_model``; ``cross_entropy`` as ``model.cross_entropy`` in the YAML."""
    return _packed_causal_lm_class()(hf_model, tokenizer, attn_implementation, cross_entropy,
                                     cross_entropy_chunk_size)
