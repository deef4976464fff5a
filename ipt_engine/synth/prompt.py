"""The instruction synthesizer's prompt format, byte for byte.

The released synthesizer (a Mistral-7B fine-tune) was trained on exactly one layout, and a model
fine-tuned on a format is sensitive to every byte of it: a missing space before ``<CON>`` or a single
``\\n`` where it saw ``\\n\\n`` measurably lowers how often it writes well-formed pairs. So the format
lives here, in one place, and every other module renders through these functions:

- a text to read:           ``<s> <CON> {text} </CON>\\n\\n``   (note the space before ``<CON>``)
- one pair:                 ``<QUE> {q} <ANS> {a} </END>``      (pairs joined by ``\\n\\n``)
- an earlier example:       context + pairs + ``</s>``
- a multi-round prompt:     earlier examples, oldest first, then the context of the new text.

The literal ``<s>`` is part of the text because the examples were concatenated that way in training;
when the prompt is tokenized, the ids must start with exactly one BOS. A tokenizer that adds its own
BOS on top (``add_special_tokens=True``, which is what vLLM does with a string prompt) would start the
sequence with two, so :func:`encode_prompt` tokenizes with ``add_special_tokens=False`` and engines
pass the resulting ids, not the string.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

BOS = "<s>"
EOS = "</s>"
CONTEXT_OPEN = " <CON> "
CONTEXT_CLOSE = " </CON>\n\n"
QUESTION = "<QUE>"
ANSWER = "<ANS>"
END = "</END>"
PAIR_SEPARATOR = "\n\n"

# A history item: an entry of a read collection ({"context", "QA_list"}) or a (text, pairs) tuple.
HistoryItem = Mapping[str, Any] | tuple[str, Sequence[Mapping[str, str]]]


def render_context(text: str) -> str:
    """The part of a prompt that presents ``text`` to read: ``<s> <CON> {text} </CON>\\n\\n``."""
    return f"{BOS}{CONTEXT_OPEN}{text}{CONTEXT_CLOSE}"


def render_pair(question: str, answer: str) -> str:
    return f"{QUESTION} {question} {ANSWER} {answer} {END}"


def render_pairs(pairs: Iterable[Mapping[str, str]]) -> str:
    """Pairs ``{"Q", "A"}`` as the synthesizer writes them: ``<QUE> q <ANS> a </END>``, ``\\n\\n``-joined."""
    return PAIR_SEPARATOR.join(render_pair(p["Q"], p["A"]) for p in pairs)


def render_example(text: str, pairs: Sequence[Mapping[str, str]]) -> str:
    """A finished earlier round as carried in a multi-round prompt: context + pairs + ``</s>``."""
    return render_context(text) + render_pairs(pairs) + EOS


def _unpack(item: HistoryItem) -> tuple[str, Sequence[Mapping[str, str]]]:
    if isinstance(item, Mapping):
        return item["context"], item["QA_list"]
    text, pairs = item
    return text, pairs


def render_history(history: Iterable[HistoryItem]) -> str:
    return "".join(render_example(*_unpack(item)) for item in history)


def render_prompt(history: Iterable[HistoryItem], text: str) -> str:
    """The full prompt for ``text``: every earlier example (oldest first), then ``text``'s context."""
    return render_history(history) + render_context(text)


def encode_prompt(prompt: str, tokenizer: Any) -> list[int]:
    """Token ids of ``prompt`` for ``tokenizer``, starting with exactly one BOS.

    The literal ``<s>`` / ``</s>`` markers of the format are the tokenizer's BOS / EOS. The prompt is split
    on them here and each text segment is encoded by the Rust backend without special tokens, so the ids
    do not depend on how a given transformers version treats text next to special tokens (transformers 4
    and 5 differ there: 4 keeps the space after ``<s>`` as a "▁" token, which is what the synthesizer saw
    in training and what this function reproduces in both). A prompt that does not start with ``<s>``
    still gets one BOS in front (when the tokenizer has one), and leading repeats collapse to one.
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    eos = getattr(tokenizer, "eos_token_id", None)
    specials = {t: i for t, i in ((getattr(tokenizer, "bos_token", None), bos),
                                   (getattr(tokenizer, "eos_token", None), eos)) if t and i is not None}
    backend = getattr(tokenizer, "backend_tokenizer", None)

    def encode_text(segment: str) -> list[int]:
        if not segment:
            return []
        if backend is not None:
            return list(backend.encode(segment, add_special_tokens=False).ids)
        return list(tokenizer(segment, add_special_tokens=False)["input_ids"])

    ids: list[int] = []
    if specials:
        pattern = re.compile("(" + "|".join(re.escape(t) for t in specials) + ")")
        for part in pattern.split(prompt):
            if part in specials:
                ids.append(specials[part])
            else:
                ids.extend(encode_text(part))
    else:
        ids = encode_text(prompt)
    if bos is None:
        return ids
    start = 0
    while start < len(ids) and ids[start] == bos:
        start += 1
    return [bos] + ids[start:]
