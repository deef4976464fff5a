"""Packed training is exact: a packed batch's loss and gradients equal those of its documents run alone.

CPU, float32, the same weights. Each document alone is an ordinary unpadded causal-LM forward through
transformers' own SDPA path; the packed batch goes through our Composer model (collator labels, packed
metadata, our attention registered with transformers). The packed loss averages over every predicted
token of the batch, so it equals the token-weighted mean of the per-document losses.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("composer")

from ipt_engine.train.attention import REGISTERED, register_attention  # noqa: E402
from ipt_engine.train.collator import PackedCollator  # noqa: E402
from ipt_engine.train.composer_model import build_composer_model  # noqa: E402

pytestmark = pytest.mark.train

VOCAB = 97


def _tiny_llama(attn: str):
    from transformers import AutoModelForCausalLM, LlamaConfig

    register_attention()
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn, torch_dtype=torch.float32)


def _documents(rng: np.random.Generator) -> list[list[np.ndarray]]:
    # rows of documents; the second row is short and gets a padding tail, the third holds one document
    lens = [[5, 9, 3, 7], [12, 4], [24]]
    return [[rng.integers(1, VOCAB, size=n, dtype=np.int64) for n in row] for row in lens]


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("impl", ["packed", "flex", "sdpa_dense", "sdpa_segments"])
def test_packed_loss_and_grads_equal_one_document_at_a_time(impl):
    rng = np.random.default_rng(1)
    rows = _documents(rng)
    model = _tiny_llama(REGISTERED[impl])
    composer_model = build_composer_model(model, None, impl)

    samples = [{"tokens": np.concatenate(row), "doc_lens": np.array([len(d) for d in row])} for row in rows]
    batch = PackedCollator(max_seq_len=24, pad_id=0)(samples)
    model.zero_grad()
    packed_loss = composer_model.loss(composer_model(batch), batch)
    packed_loss.backward()
    packed_grads = _grads(model)

    docs = [d for row in rows for d in row]
    targets = sum(len(d) - 1 for d in docs)
    model.zero_grad()
    total = torch.zeros(())
    for d in docs:
        ids = torch.from_numpy(d)[None]
        out = model(input_ids=ids, labels=ids)  # no packed context: transformers' causal SDPA, unpadded
        weighted = out.loss * (len(d) - 1) / targets
        weighted.backward()
        total = total + weighted.detach()
    single_grads = _grads(model)

    torch.testing.assert_close(packed_loss.detach(), total, rtol=1e-5, atol=1e-6)
    for name, g in single_grads.items():
        torch.testing.assert_close(packed_grads[name], g, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


def test_padding_and_microbatching_do_not_change_the_loss():
    """The same documents in longer rows (more padding), split into single-row microbatches."""
    rng = np.random.default_rng(2)
    rows = _documents(rng)
    model = _tiny_llama(REGISTERED["packed"])
    cm = build_composer_model(model, None, "packed")
    samples = [{"tokens": np.concatenate(row), "doc_lens": np.array([len(d) for d in row])} for row in rows]
    with torch.no_grad():
        tight = PackedCollator(24, 0)(samples)
        loose = PackedCollator(40, 0)(samples)
        n_targets = [(b["labels"] != -100).sum() for b in (tight, loose)]
        assert n_targets[0] == n_targets[1]
        loss_tight = cm.loss(cm(tight), tight)
        loss_loose = cm.loss(cm(loose), loose)
        per_row = []
        for i in range(len(samples)):
            mb = {k: v[i : i + 1] for k, v in loose.items()}
            per_row.append(cm.loss(cm(mb), mb) * (mb["labels"] != -100).sum())
    torch.testing.assert_close(loss_tight, loss_loose, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sum(per_row) / n_targets[1], loss_loose, rtol=1e-5, atol=1e-6)


def test_flops_count_only_unmasked_pairs():
    from ipt_engine.train.composer_model import attention_pairs, flops_for, matmul_params

    model = _tiny_llama(REGISTERED["packed"])
    cm = build_composer_model(model, None, "packed")
    batch = PackedCollator(32, 0)([{"tokens": np.ones(10, dtype=np.int64), "doc_lens": np.array([4, 6])}])
    assert attention_pairs(batch["doc_lens"]) == 4 * 5 // 2 + 6 * 7 // 2
    p = matmul_params(model)
    assert p == sum(x.numel() for x in model.parameters()) - VOCAB * 64  # untied: input table excluded
    expected = 6 * p * 10 + 3.5 * 4 * 16 * 4 * 2 * (10 + 21)
    assert cm.flops_per_batch(batch) == pytest.approx(expected)
    assert flops_for(model.config, p, 10, 0) == pytest.approx(6 * p * 10)
