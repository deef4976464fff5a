"""Offline assets: the synthesizer's tokenizer and tiny random-weight causal LMs, built locally.

Tests, CI and the demo never reach a model hub. Everything here is materialized deterministically into
a cache directory and then loaded through the ordinary ``from_pretrained`` path, so code that accepts
one of these directories accepts a hub id just the same wherever a hub is reachable.

- The Mistral-7B v1 SentencePiece model ships inside the ``mistral-common`` PyPI package; it is the
  instruction synthesizer's own tokenizer (the synthesizer is a Mistral-7B fine-tune). We save it as a
  Hugging Face tokenizer directory: a ``tokenizer.json`` converted by our own code (identical under
  transformers 4 and 5, equal to SentencePiece on real text) plus the SentencePiece file itself.
- Tiny Llama/Mistral models have head_dim >= 32 because vLLM's CPU attention needs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Literal

from ipt_engine.errors import UserError

MISTRAL_TOKENIZER = "mistral-v1"
ASSET_DONE = ".ipt-complete"  # marker: the directory was published whole


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$IPT_CACHE``, else ``~/.cache/ipt-engine``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("IPT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "ipt-engine"


def publish_build_dir(tmp: Path, final: Path) -> Path:
    """Publish a fully written asset directory atomically (rename), tolerating a concurrent builder."""
    (tmp / ASSET_DONE).write_text("ok\n")
    try:
        os.replace(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process published it first
        if not (final / ASSET_DONE).exists():
            raise
    return final


def fresh_build_dir(final: Path) -> Path:
    """An empty hidden sibling of ``final`` to build an asset in before :func:`publish_build_dir`."""
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def sentencepiece_model_path() -> Path:
    """The Mistral v1 SentencePiece model file inside the installed ``mistral-common`` package."""
    import importlib.util

    spec = importlib.util.find_spec("mistral_common")  # located, not imported: importing it is slow
    if spec is None or spec.origin is None:
        raise UserError("the Mistral tokenizer needs the `mistral-common` package (pip install mistral-common)")
    path = Path(spec.origin).parent / "data" / "tokenizer.model.v1"
    if not path.is_file():
        raise UserError(f"{path}: not found in the installed mistral-common package")
    return path


def _transformers_major() -> str:
    """transformers' major version, read from package metadata (importing it takes seconds)."""
    from importlib.metadata import version

    return version("transformers").split(".")[0]


def mistral_tokenizer_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Materialize the instruction synthesizer's tokenizer as a Hugging Face directory; return it."""
    sp_path = sentencepiece_model_path()
    digest = hashlib.sha256(sp_path.read_bytes()).hexdigest()[:12]
    final = cache_root(cache_dir) / "tokenizers" / f"{MISTRAL_TOKENIZER}-{digest}-v3-tf{_transformers_major()}"
    if (final / ASSET_DONE).exists():
        return final
    tmp = fresh_build_dir(final)
    _write_tokenizer(sp_path, tmp)
    return publish_build_dir(tmp, final)


def sentencepiece_bpe_to_tokenizers(sp_path: Path) -> Any:
    """Convert a SentencePiece BPE model (Llama/Mistral style) into a Rust ``tokenizers.Tokenizer``.

    Written against SentencePiece itself rather than through transformers' converters, because those
    differ between transformers 4 and 5 (5 drops the legacy normalizer and orders tied merges
    differently), and the synthesis env (transformers 5) and the train env (transformers 4) must
    tokenize identically. Tests check the result against raw SentencePiece on real text.

    - vocabulary: SentencePiece's pieces and ids, byte-fallback pieces included;
    - merges: every split of a piece into two pieces that are both in the vocabulary, ranked by the
      merged piece's score (SentencePiece BPE applies higher-scored merges first), ties broken by the
      longer left part, then the longer right part, then ids — the order that reproduces SentencePiece;
    - normalizer: prepend "▁" and turn spaces into "▁" (SentencePiece's dummy prefix, "legacy" mode);
    - post-processor: BOS in front, as Mistral's tokenizer adds it.
    """
    import sentencepiece as spm
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE

    sp = spm.SentencePieceProcessor(model_file=str(sp_path))
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    ranked = []
    for piece, i in vocab.items():
        if sp.is_byte(i) or sp.is_control(i) or sp.is_unknown(i):
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                ranked.append((-sp.get_score(i), -len(left), -len(right), vocab[left], vocab[right], left, right))
    ranked.sort()
    tok = Tokenizer(BPE(vocab=vocab, merges=[(r[5], r[6]) for r in ranked], unk_token=sp.id_to_piece(sp.unk_id()),
                        fuse_unk=True, byte_fallback=True))
    tok.add_special_tokens([AddedToken(sp.id_to_piece(i), normalized=False, special=True)
                            for i in (sp.unk_id(), sp.bos_id(), sp.eos_id())])
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    bos = sp.id_to_piece(sp.bos_id())
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, sp.bos_id())]
    )
    return tok


def _write_tokenizer(sp_path: Path, out: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=sentencepiece_bpe_to_tokenizers(sp_path),
        bos_token="<s>", eos_token="</s>", unk_token="<unk>", clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )
    fast.save_pretrained(out)
    shutil.copyfile(sp_path, out / "tokenizer.model")  # for users who want SentencePiece itself


TINY_DEFAULTS: dict[str, Any] = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,  # head_dim 32: the smallest vLLM's CPU backend accepts
    num_key_value_heads=2,
    max_position_embeddings=4096,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
)


def tiny_model_dir(
    arch: Literal["llama", "mistral"] = "llama",
    *,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    tokenizer_dir: str | os.PathLike | None = None,
    **overrides: Any,
) -> Path:
    """Build (once) a tiny random-weight causal LM with the Mistral tokenizer; return its directory.

    The directory is keyed by the full config, the seed and the transformers major version, and holds
    ``config.json``, safetensors weights and the tokenizer, so ``AutoModelForCausalLM.from_pretrained``
    and vLLM both load it as they would a hub model.
    """
    import transformers

    cfg = {**TINY_DEFAULTS, **overrides}
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    if head_dim < 32:
        raise UserError(f"tiny model head_dim is {head_dim}; vLLM's CPU backend needs at least 32")
    tok_dir = Path(tokenizer_dir) if tokenizer_dir else mistral_tokenizer_dir(cache_dir)
    key = json.dumps({"arch": arch, "seed": seed, "cfg": cfg, "tok": tok_dir.name}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    final = cache_root(cache_dir) / "models" / f"tiny-{arch}-{digest}-tf{transformers.__version__.split('.')[0]}"
    if (final / ASSET_DONE).exists():
        return final
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    tok = AutoTokenizer.from_pretrained(tok_dir)
    common = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **cfg)
    if arch == "llama":
        config, cls = LlamaConfig(**common), LlamaForCausalLM
    elif arch == "mistral":
        config, cls = MistralConfig(sliding_window=None, **common), MistralForCausalLM
    else:
        raise UserError(f"unknown tiny model architecture {arch!r} (expected llama or mistral)")
    tmp = fresh_build_dir(final)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        model = cls(config)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    return publish_build_dir(tmp, final)
