"""A tiny model that writes the synthesizer's format, so tests and benchmarks exercise real chains.

A random-weight model never writes ``<QUE> … <ANS> … </END>``: every chain would stop after its first
round, and carried context, prefix-cache reuse and ``inherit_from_prev`` would go untested and
unmeasured. So we fine-tune the tiny random Llama of :mod:`ipt_engine.assets` for a couple of minutes on
CPU to continue synthesizer prompts with well-formed pairs:

- texts: a real corpus present on every machine — docstrings of Python standard-library modules
  (:func:`corpus_texts`), not text written by us;
- pairs: made mechanically, cloze questions ("Fill in the blank: … ____ …", answer the missing word)
  on sentences of the text, so answers copy spans of the context, as the real synthesizer's do (which
  is what n-gram speculation exploits);
- texts of two sizes: paragraphs (30-90 words) and documents (runs of consecutive paragraphs, up to
  400 words, :func:`long_texts`). Trained on paragraphs alone, the model closed pairs on 0.6 of
  350-word texts and almost no chain carried a history, which left the multi-round behaviour (and the
  prefix-cache reuse it allows) unexercised on corpus-sized texts;
- prompts: exactly the synthesizer's layout (:mod:`ipt_engine.synth.prompt`), one to three rounds, each
  earlier round carried as context + pairs + ``</s>``; the loss is on the generated part only (pairs,
  then EOS), and the target is the whole string's tokenization after the prompt
  (:func:`continuation_ids`), so what the model writes is, id for id, what the next round's prompt
  holds — as for the real synthesizer, which was trained on whole strings.

The result is deterministic (fixed seeds, single-threaded-safe ops, a fixed corpus order) and cached
under ``<cache>/models/format-<hash>``, the hash covering the corpus, the recipe, the base model and the
transformers major version, so a changed ingredient rebuilds it and an unchanged one loads in a
second. It trains with whatever torch the running environment has: the synth env (torch 2.13 CPU,
transformers 5) builds the copy vLLM loads, the train env (torch 2.7, transformers 4) builds its own
for the HF engine; a build takes about 2.7 min on two idle cores (much longer on busy ones). While it
trains, a progress bar shows the step, the loss and the time left, on a terminal or when asked
(``progress=True``); elsewhere (logs, CI) the build says one line when it starts and one when it ends.

Its answers are often wrong; what matters is that it reliably writes well-formed pairs that
``parse_pairs`` accepts, closes them, and stops with EOS after a few pairs.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import random
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ipt_engine.synth.prompt import encode_prompt, render_pairs, render_prompt

FORMAT_VERSION = 3  # bump when the recipe's code changes in a way the recipe fields do not show

# Standard-library modules whose docstrings make the corpus: long, real prose, on every machine.
CORPUS_MODULES = (
    "argparse", "asyncio", "base64", "bisect", "calendar", "collections", "concurrent.futures",
    "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib",
    "email.message", "enum", "fractions", "functools", "glob", "gzip", "hashlib", "heapq", "hmac",
    "html.parser", "http.client", "http.server", "inspect", "io", "ipaddress", "itertools", "json",
    "logging", "mailbox", "multiprocessing.pool", "numbers", "operator", "optparse", "os", "pathlib",
    "pickle", "pprint", "queue", "random", "re", "sched", "secrets", "selectors", "shlex", "shutil",
    "smtplib", "socket", "socketserver", "sqlite3", "statistics", "string", "subprocess", "tarfile",
    "tempfile", "textwrap", "threading", "timeit", "tokenize", "traceback", "types", "typing",
    "unittest", "urllib.parse", "urllib.request", "uuid", "warnings", "weakref", "xml.dom.minidom",
    "zipfile", "zoneinfo",
)  # fmt: skip


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the model's weights (part of the cache key)."""

    seed: int = 0
    steps: int = 300
    batch_size: int = 8
    learning_rate: float = 3e-3
    warmup: int = 20
    max_context_words: int = 90
    max_long_words: int = 400
    """Long texts (consecutive paragraphs joined) reach this many words, so the model closes pairs on
    document-sized texts and chains carry history there too, not only on paragraphs."""
    max_rounds: int = 3
    max_seq_len: int = 2048
    num_hidden_layers: int = 4


# --------------------------------------------------------------------------------------------------
# Corpus and mechanical pairs
# --------------------------------------------------------------------------------------------------


def _docstrings(module_name: str) -> list[str]:
    import importlib

    try:
        module = importlib.import_module(module_name)
    except Exception:  # a module missing from this build of Python: just skip it
        return []
    docs = [inspect.getdoc(module) or ""]
    for name in sorted(vars(module)):
        obj = getattr(module, name)
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj) or inspect.isfunction(obj):
            docs.append(inspect.getdoc(obj) or "")
    return docs


def _is_prose(words: list[str]) -> bool:
    """Most words plain alphabetic: keeps prose, drops code samples, doctests and tables."""
    plain = sum(1 for w in words if w.strip(".,;:()'\"!?").isalpha())
    return plain >= 0.85 * len(words) and not any(c in " ".join(words) for c in ("=", ">>>", "|", "{"))


def corpus_texts(min_words: int = 30, max_words: int = 90) -> list[str]:
    """Paragraph-sized prose from standard-library docstrings, deduplicated, in a fixed order."""
    texts, seen = [], set()
    for module_name in CORPUS_MODULES:
        for doc in _docstrings(module_name):
            for para in re.split(r"\n\s*\n", doc):
                words = para.split()
                if len(words) < min_words or not _is_prose(words):
                    continue
                text = " ".join(words[:max_words])
                if text not in seen:
                    seen.add(text)
                    texts.append(text)
    return texts


_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"^[A-Za-z][a-z]{4,}$")
_TEMPLATES = (
    "Fill in the blank: {s}",
    "Complete the sentence: {s}",
    "Which word is missing? {s}",
)


def cloze_pairs(text: str, rng: random.Random, max_pairs: int = 4) -> list[dict[str, str]]:
    """Cloze questions on sentences of ``text``: one content word blanked per sentence.

    The sentences are drawn from the whole text (in reading order), not its first few, so on a long
    text the model learns to ask about any part of it, as the real synthesizer does.
    """
    eligible = []
    for sentence in _SENTENCE.split(text):
        words = sentence.split()[:24]
        candidates = [i for i, w in enumerate(words) if _WORD.match(w.strip(".,;:()'\""))]
        if len(words) >= 6 and candidates:
            eligible.append((words, candidates))
    chosen = sorted(rng.sample(range(len(eligible)), min(max_pairs, len(eligible))))
    pairs = []
    for k in chosen:
        words, candidates = list(eligible[k][0]), eligible[k][1]
        i = rng.choice(candidates)
        answer = words[i].strip(".,;:()'\"")
        words[i] = words[i].replace(answer, "____")
        template = rng.choice(_TEMPLATES)
        pairs.append({"Q": template.format(s=" ".join(words)), "A": answer})
    return pairs


def long_texts(texts: list[str], rng: random.Random, max_words: int) -> list[str]:
    """Document-sized texts: runs of consecutive paragraphs (mostly one module's), ``\\n\\n``-joined,
    each cut off at a random length between a few paragraphs and ``max_words`` words."""
    out, i = [], 0
    while i < len(texts):
        target = rng.randint(max_words // 3, max_words)
        paragraphs, words = [], 0
        while i < len(texts) and words + len(texts[i].split()) <= target:
            paragraphs.append(texts[i])
            words += len(texts[i].split())
            i += 1
        if len(paragraphs) < 2:  # one paragraph longer than the target: move on
            i += 1
            continue
        out.append("\n\n".join(paragraphs))
    return out


def training_examples(texts: list[str], tokenizer: Any, recipe: Recipe) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, target ids) pairs: 1 to ``max_rounds`` rounds, target = the last round's pairs + EOS.

    Paragraph-sized and document-sized texts are grouped separately, so a long text's prompt carries
    long earlier rounds, as a chain over a corpus of documents does.
    """
    rng = random.Random(recipe.seed)
    examples = []
    for passes in range(8):  # a few passes with different groupings (and different long texts)
        pool = texts if passes % 2 == 0 else long_texts(texts, rng, recipe.max_long_words)
        # Grouping decides the rounds: a group of k texts is a (k-1)-round history plus the new text.
        items = [(t, cloze_pairs(t, rng)) for t in pool]
        items = [(t, p) for t, p in items if p]
        order = list(range(len(items)))
        rng.shuffle(order)
        i = 0
        while i < len(order):
            k = rng.randint(1, recipe.max_rounds)
            group = [items[j] for j in order[i : i + k]]
            i += k
            history, (text, pairs) = group[:-1], group[-1]
            rendered = render_prompt(history, text)
            prompt = encode_prompt(rendered, tokenizer)
            target = continuation_ids(prompt, encode_prompt(rendered + render_pairs(pairs), tokenizer))
            target.append(tokenizer.eos_token_id)
            if len(prompt) + len(target) <= recipe.max_seq_len:
                examples.append((prompt, target))
    return examples


def continuation_ids(prompt: list[int], whole: list[int]) -> list[int]:
    """The ids ``whole`` adds after ``prompt``: the generation as the tokenizer cuts the whole string.

    Tokenized on its own, the pairs would start with SentencePiece's word-initial "▁<" where the
    prompt followed by the pairs has "<"; a model trained on the former writes ids that the next
    round's prompt (rendered and tokenized whole) does not contain, so no block of a generation could
    ever be served again from the prefix cache.
    """
    if whole[: len(prompt)] != prompt:
        raise ValueError("the prompt's tokens are not a prefix of the prompt and its pairs")
    return whole[len(prompt) :]


def length_batches(examples: list[tuple[list[int], list[int]]], batch_size: int) -> list[list[int]]:
    """Indices of ``examples`` in batches of similar total length, so little of a batch is padding."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]) + len(examples[i][1]))
    return [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]


# --------------------------------------------------------------------------------------------------
# Building and caching
# --------------------------------------------------------------------------------------------------


def format_model_dir(cache_dir: str | os.PathLike[str] | None = None, recipe: Recipe | None = None,
                     *, progress: bool | None = None) -> Path:
    """Return the directory of the format-writing tiny model, building it first if it is not cached.

    ``progress``: show the training progress bar (None: only when stderr is a terminal).
    """
    import transformers

    from ipt_engine.assets import ASSET_DONE, cache_root, fresh_build_dir, publish_build_dir, tiny_model_dir

    recipe = recipe or Recipe()
    base = tiny_model_dir("llama", cache_dir=cache_dir, num_hidden_layers=recipe.num_hidden_layers)
    texts = corpus_texts()
    key = json.dumps({"v": FORMAT_VERSION, "recipe": asdict(recipe), "base": base.name,
                      "corpus": hashlib.sha256("\n\x00".join(texts).encode()).hexdigest()}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    final = cache_root(cache_dir) / "models" / f"format-llama-{digest}-tf{transformers.__version__.split('.')[0]}"
    if (final / ASSET_DONE).exists():
        return final
    tmp = fresh_build_dir(final)
    print(f"format model: building {final.name} ({recipe.steps} steps; minutes on CPU, once, then cached)",
          file=sys.stderr, flush=True)
    _train(base, texts, recipe, tmp, progress=progress)
    (tmp / "ipt-format-model.json").write_text(json.dumps(json.loads(key), indent=2) + "\n")
    return publish_build_dir(tmp, final)


def progress_bar(steps: int, progress: bool | None) -> Any:
    """The build's tqdm bar on stderr: step, loss (set by the loop) and time left, redrawn in place.

    Disabled unless ``progress`` is true or, with ``progress=None``, stderr is a terminal: in a log
    file every redraw would be a line of its own.
    """
    from tqdm import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    return tqdm(total=steps, desc="format model", unit="step", disable=not show, file=sys.stderr,
                dynamic_ncols=True)


def _train(base: Path, texts: list[str], recipe: Recipe, out: Path, *, progress: bool | None = None) -> None:
    """Fine-tune ``base`` on the cloze examples; loss on target tokens only; save to ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    examples = training_examples(texts, tokenizer, recipe)
    torch.manual_seed(recipe.seed)
    model = AutoModelForCausalLM.from_pretrained(base).float()
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=0.0)
    rng = random.Random(recipe.seed + 1)
    vocab = torch.tensor(sorted({t for _, target in examples for t in target}), dtype=torch.long)
    remap = torch.zeros(model.config.vocab_size, dtype=torch.long)
    remap[vocab] = torch.arange(len(vocab))
    pad = tokenizer.eos_token_id
    t0 = time.perf_counter()
    batches = length_batches(examples, recipe.batch_size)
    bar = progress_bar(recipe.steps, progress)
    for step in range(recipe.steps):
        batch = [examples[i] for i in rng.choice(batches)]
        length = max(len(p) + len(t) for p, t in batch)
        ids = torch.full((len(batch), length), pad, dtype=torch.long)
        labels = torch.full((len(batch), length), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), length), dtype=torch.long)
        for row, (p, t) in enumerate(batch):
            seq = p + t
            ids[row, : len(seq)] = torch.tensor(seq)
            labels[row, len(p) : len(seq)] = torch.tensor(t)
            mask[row, : len(seq)] = 1
        # The 32000-wide LM head is most of the compute, so only positions that predict a target
        # token go through it, and only against the rows of tokens that targets use (a few thousand):
        # the rows of unused tokens keep their near-zero random logits, which the trained rows of
        # the format's tokens soon dominate at inference.
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        shifted = labels[:, 1:]
        keep = shifted != -100
        logits = hidden[:, :-1][keep] @ model.lm_head.weight[vocab].T
        loss = torch.nn.functional.cross_entropy(logits.float(), remap[shifted[keep]])
        lr = recipe.learning_rate * min(1.0, (step + 1) / recipe.warmup)
        lr *= 0.5 * (1 + __import__("math").cos(__import__("math").pi * step / recipe.steps))
        for group in optim.param_groups:
            group["lr"] = lr
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        bar.update(1)
    shown = not bar.disable  # read before close(), which disables the bar
    bar.close()
    if not shown:
        print(f"format model: {recipe.steps} steps in {time.perf_counter() - t0:.0f}s, final loss {loss.item():.3f}",
              file=sys.stderr, flush=True)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def main(argv: list[str] | None = None) -> None:
    """``python -m ipt_engine.synth.format_model [CACHE_DIR] [--progress | --no-progress]``: build (or
    find) the model and print its path on stdout (progress goes to stderr)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m ipt_engine.synth.format_model",
        description="Build (or find) the format-writing tiny model; print its path on stdout, progress on stderr.")
    parser.add_argument("cache_dir", nargs="?", default=None,
                        help="asset cache (default: $IPT_CACHE, else ~/.cache/ipt-engine)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="show the training progress bar (default: only on a terminal)")
    args = parser.parse_args(argv)
    print(format_model_dir(args.cache_dir, progress=args.progress))


if __name__ == "__main__":
    main()
