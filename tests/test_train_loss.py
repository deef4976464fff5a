"""The loss without logits equals the loss over materialized logits: value and every gradient.

Reference: ``F.cross_entropy`` over the full float32 logits (what Hugging Face's causal-LM loss does),
on fresh random inputs with ignored targets, for chunk sizes that do and do not divide the token count;
then whole training steps of a tiny Llama through the Composer model, ``chunked`` against ``full``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("composer")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ipt_engine.errors import UserError  # noqa: E402
from ipt_engine.train.loss import (  # noqa: E402
    IGNORE_INDEX,
    causal_lm_loss,
    chunked_linear_cross_entropy,
    full_linear_cross_entropy,
    linear_cross_entropy,
    resolve_mode,
)

pytestmark = pytest.mark.train
TOL = dict(rtol=1e-5, atol=1e-5)
REPO = Path(__file__).resolve().parents[1]


def _inputs(gen: torch.Generator, tokens: int, dim: int, vocab: int, ignored: float):
    hidden = torch.randn(tokens, dim, generator=gen)
    weight = torch.randn(vocab, dim, generator=gen) * 0.5
    labels = torch.randint(0, vocab, (tokens,), generator=gen)
    labels[torch.rand(tokens, generator=gen) < ignored] = IGNORE_INDEX
    return hidden, weight, labels


def _loss_and_grads(fn, hidden, weight, labels):
    h = hidden.clone().requires_grad_()
    w = weight.clone().requires_grad_()
    loss = fn(h, w, labels)
    loss.backward()
    return loss.detach(), h.grad, w.grad


def _assert_same(got, want):
    for g, e, what in zip(got, want, ("loss", "d/dhidden", "d/dweight")):
        torch.testing.assert_close(g, e, **TOL, msg=lambda m, w=what: f"{w}: {m}")


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 300, 301, 4096])
def test_chunked_equals_full_logits(chunk_size):
    gen = torch.Generator().manual_seed(chunk_size)
    hidden, weight, labels = _inputs(gen, tokens=301, dim=24, vocab=211, ignored=0.3)
    want = _loss_and_grads(full_linear_cross_entropy, hidden, weight, labels)
    got = _loss_and_grads(lambda h, w, y: chunked_linear_cross_entropy(h, w, y, chunk_size), hidden, weight, labels)
    _assert_same(got, want)
    assert (got[1][labels == IGNORE_INDEX] == 0).all()  # ignored positions get no gradient


def test_tied_embedding_gets_both_gradients():
    """One table as input embedding and LM head: its gradient sums the lookup's and the head's parts."""
    gen = torch.Generator().manual_seed(3)
    vocab, dim, tokens = 97, 16, 130
    table = torch.randn(vocab, dim, generator=gen)
    mix = torch.randn(dim, dim, generator=gen) / dim**0.5
    ids = torch.randint(0, vocab, (tokens,), generator=gen)
    labels = torch.roll(ids, -1)
    labels[::9] = IGNORE_INDEX

    def run(loss_fn):
        t = table.clone().requires_grad_()
        m = mix.clone().requires_grad_()
        hidden = torch.tanh(t[ids] @ m)
        loss = loss_fn(hidden, t, labels)
        loss.backward()
        return loss.detach(), t.grad, m.grad

    want = run(full_linear_cross_entropy)
    got = run(lambda h, w, y: chunked_linear_cross_entropy(h, w, y, 37))
    for g, e in zip(got, want):
        torch.testing.assert_close(g, e, **TOL)


@settings(max_examples=30, deadline=None)
@given(tokens=st.integers(1, 70), dim=st.integers(1, 20), vocab=st.integers(2, 90), chunk=st.integers(1, 80),
       ignored=st.sampled_from([0.0, 0.2, 0.7]), seed=st.integers(0, 2**31 - 1))
def test_chunked_equals_full_for_any_shape(tokens, dim, vocab, chunk, ignored, seed):
    gen = torch.Generator().manual_seed(seed)
    hidden, weight, labels = _inputs(gen, tokens, dim, vocab, ignored)
    labels[0] = 0  # at least one target: a mean over none is NaN in both, tested on its own below
    want = _loss_and_grads(full_linear_cross_entropy, hidden, weight, labels)
    got = _loss_and_grads(lambda h, w, y: chunked_linear_cross_entropy(h, w, y, chunk), hidden, weight, labels)
    _assert_same(got, want)


def test_targets_far_below_the_best_logit_keep_an_exact_loss():
    """A target ~200 nats below the row's best: its softmax probability underflows float32, and the loss
    must still be logsumexp - logit, not a clipped value."""
    gen = torch.Generator().manual_seed(9)
    hidden, weight, labels = _inputs(gen, 40, 8, 30, 0.0)
    hidden[::3] *= 60.0  # large logits: some targets fall far below their row's maximum
    logits = hidden @ weight.t()
    gap = logits.max(1).values - logits.gather(1, labels[:, None]).squeeze(1)
    assert (gap > 110).any()
    want = _loss_and_grads(full_linear_cross_entropy, hidden, weight, labels)
    got = _loss_and_grads(lambda h, w, y: chunked_linear_cross_entropy(h, w, y, 16), hidden, weight, labels)
    _assert_same(got, want)


def test_no_targets_gives_nan_loss_and_zero_gradients_like_the_reference():
    gen = torch.Generator().manual_seed(5)
    hidden, weight, _ = _inputs(gen, 12, 8, 30, 0.0)
    labels = torch.full((12,), IGNORE_INDEX)
    want = _loss_and_grads(full_linear_cross_entropy, hidden, weight, labels)
    got = _loss_and_grads(lambda h, w, y: chunked_linear_cross_entropy(h, w, y, 5), hidden, weight, labels)
    assert torch.isnan(got[0]) and torch.isnan(want[0])
    for g, e in zip(got[1:], want[1:]):
        torch.testing.assert_close(g, e)


def test_without_grad_only_the_loss_is_computed():
    gen = torch.Generator().manual_seed(6)
    hidden, weight, labels = _inputs(gen, 50, 8, 40, 0.2)
    with torch.no_grad():
        got = chunked_linear_cross_entropy(hidden.requires_grad_(), weight, labels, 16)
    assert got.grad_fn is None
    torch.testing.assert_close(got, full_linear_cross_entropy(hidden.detach(), weight, labels), **TOL)


def test_causal_shift_matches_hugging_face_loss():
    from transformers.loss.loss_utils import ForCausalLMLoss

    gen = torch.Generator().manual_seed(7)
    hidden = torch.randn(3, 19, 12, generator=gen)
    weight = torch.randn(50, 12, generator=gen)
    labels = torch.randint(0, 50, (3, 19), generator=gen)
    labels[:, 0] = IGNORE_INDEX
    labels[1, 12:] = IGNORE_INDEX  # a padded tail
    want = ForCausalLMLoss(hidden @ weight.t(), labels, vocab_size=50)
    for mode in ("chunked", "full"):
        torch.testing.assert_close(causal_lm_loss(hidden, weight, labels, mode=mode, chunk_size=10), want, **TOL)


def test_modes_resolve_per_device():
    assert resolve_mode("auto", "cpu") == "chunked"
    assert resolve_mode("full", "cpu") == "full"
    with pytest.raises(ValueError, match="fused.*CUDA"):
        resolve_mode("fused", "cpu")
    with pytest.raises(ValueError, match="chunk_size must be positive"):
        linear_cross_entropy(torch.randn(2, 2), torch.randn(3, 2), torch.zeros(2, dtype=torch.long),
                             mode="chunked", chunk_size=0)


@pytest.mark.parametrize("overrides, expected", [
    (["model.cross_entropy_chunk_size=0"], r"model\.cross_entropy_chunk_size: must be > 0, got 0$"),
    (["model.cross_entropy=fused"], r"model\.cross_entropy: fused needs a GPU"),
    (["model.cross_entropy=liger"], r"model\.cross_entropy: must be one of 'auto', 'fused', 'chunked' or 'full', got 'liger'$"),
])
def test_config_rejects_bad_choices(overrides, expected):
    from ipt_engine.train.config import load_config

    with pytest.raises(UserError, match=expected):
        load_config(REPO / "examples" / "tiny-cpu.yaml", overrides)


def test_config_default_is_on():
    from ipt_engine.train.config import ModelConfig

    assert ModelConfig().cross_entropy == "auto"


# --- the Composer model: whole training steps ---------------------------------------------------------

VOCAB = 503


def _tiny_llama(tied: bool):
    from transformers import AutoModelForCausalLM, LlamaConfig

    from ipt_engine.train.attention import REGISTERED, register_attention

    register_attention()
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                         tie_word_embeddings=tied)
    torch.manual_seed(11)
    return AutoModelForCausalLM.from_config(config, attn_implementation=REGISTERED["packed"],
                                            torch_dtype=torch.float32)


def _batch(seed: int):
    from ipt_engine.train.collator import PackedCollator

    rng = np.random.default_rng(seed)
    rows = [[13, 29, 6], [40], [7, 9]]  # the last two rows end in padding
    samples = [{"tokens": rng.integers(1, VOCAB, size=sum(r)), "doc_lens": np.array(r)} for r in rows]
    return PackedCollator(max_seq_len=48, pad_id=0)(samples)


def _train_steps(cross_entropy: str, tied: bool, steps: int = 2):
    from ipt_engine.train.composer_model import build_composer_model

    model = _tiny_llama(tied)
    cm = build_composer_model(model, None, "packed", cross_entropy, cross_entropy_chunk_size=17)
    # SGD: Adam's first update is ≈ lr·sign(grad), which turns a 1e-9 difference of a near-zero gradient
    # into a full step; SGD keeps equal gradients meaning equal weights.
    opt = torch.optim.SGD(model.parameters(), lr=20.0)
    losses, grads = [], []
    for step in range(steps):
        batch = _batch(step)
        loss = cm.loss(cm(batch), batch)
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        opt.step()
        opt.zero_grad(set_to_none=True)
    return cm, losses, grads


@pytest.mark.parametrize("tied", [True, False])
def test_training_steps_chunked_equal_full(tied):
    cm, chunked_losses, chunked_grads = _train_steps("chunked", tied)
    assert cm.cross_entropy == "chunked" and "forward" in vars(cm.model)  # the logit-free forward is on
    _, full_losses, full_grads = _train_steps("full", tied)
    for a, b in zip(chunked_losses, full_losses):
        torch.testing.assert_close(a, b, **TOL)
    for ga, gb in zip(chunked_grads, full_grads):
        assert ga.keys() == gb.keys()
        for name in ga:
            # gradients of a freshly initialized model are ~1e-4: tolerance relative to the tensor's scale
            scale = float(gb[name].abs().max())
            torch.testing.assert_close(ga[name], gb[name], rtol=1e-5, atol=1e-3 * scale,
                                       msg=lambda m, n=name: f"{n}: {m}")


def test_eval_metrics_still_see_logits():
    """Composer's eval_forward drops the labels: the model returns logits, and LanguageCrossEntropy over
    them equals the chunked training loss of the same batch."""
    from composer.metrics.nlp import LanguageCrossEntropy

    from ipt_engine.train.composer_model import build_composer_model

    cm = build_composer_model(_tiny_llama(True), None, "packed", "chunked", 17)
    batch = _batch(5)
    with torch.no_grad():
        train_loss = cm.loss(cm(batch), batch)
        eval_batch = dict(batch)
        logits = cm.eval_forward(eval_batch)
    assert logits.shape == (*batch["input_ids"].shape, VOCAB)
    metric = LanguageCrossEntropy()
    cm.update_metric(eval_batch, logits, metric)
    torch.testing.assert_close(metric.compute(), train_loss, **TOL)


def test_logit_transforms_fall_back_or_refuse():
    from ipt_engine.train.model import attach_lm_loss

    model = _tiny_llama(False)
    model.config.final_logit_softcapping = 30.0
    assert attach_lm_loss(model, "auto") == "full" and "forward" not in vars(model)
    with pytest.raises(UserError, match="final_logit_softcapping"):
        attach_lm_loss(model, "chunked")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_equals_full_on_cuda(dtype):
    gen = torch.Generator().manual_seed(8)
    hidden, weight, labels = (t.cuda() for t in _inputs(gen, 4099, 256, 32000, 0.1))
    hidden = hidden.to(dtype)
    want = _loss_and_grads(full_linear_cross_entropy, hidden, weight.to(dtype), labels)
    for mode in ("fused", "chunked"):
        got = _loss_and_grads(lambda h, w, y, m=mode: linear_cross_entropy(h, w, y, mode=m, chunk_size=1000),
                              hidden, weight.to(dtype), labels)
        tol = TOL if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
        for g, e in zip(got, want):
            torch.testing.assert_close(g.float(), e.float(), **tol)
