"""Materialize offline assets into the cache (default ~/.cache/ipt-engine, or $IPT_CACHE) and print
their directories: the instruction synthesizer's Mistral v1 tokenizer (shipped inside the mistral-common
package) as a Hugging Face tokenizer directory, and tiny random-weight Llama/Mistral models that load
through the ordinary from_pretrained path (and in vLLM).

examples:
  ipt assets tokenizer
  ipt assets tiny-model --arch mistral --layers 2
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=("tokenizer", "tiny-model"), help="which asset to build")
    p.add_argument("--cache-dir", help="cache directory (default $IPT_CACHE or ~/.cache/ipt-engine)")
    p.add_argument("--arch", choices=("llama", "mistral"), default="llama", help="tiny-model architecture")
    p.add_argument("--hidden-size", type=int, default=128, help="tiny-model hidden size")
    p.add_argument("--heads", type=int, default=4, help="tiny-model attention heads (head_dim must be >= 32)")
    p.add_argument("--kv-heads", type=int, default=2, help="tiny-model key/value heads")
    p.add_argument("--layers", type=int, default=2, help="tiny-model layers")
    p.add_argument("--seed", type=int, default=0, help="weight initialization seed")


def run(args: argparse.Namespace) -> int:
    from ipt_engine import assets
    from ipt_engine.errors import UserError

    if args.what == "tokenizer":
        print(assets.mistral_tokenizer_dir(args.cache_dir))
        return 0
    if args.heads < 1 or args.hidden_size % args.heads or args.heads % max(1, args.kv_heads):
        raise UserError("--hidden-size must be divisible by --heads, and --heads by --kv-heads")
    print(assets.tiny_model_dir(
        args.arch, cache_dir=args.cache_dir, seed=args.seed, hidden_size=args.hidden_size,
        intermediate_size=2 * args.hidden_size, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads, num_hidden_layers=args.layers,
    ))
    return 0
