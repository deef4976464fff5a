"""Turning a synthesizer generation back into instruction-response pairs.

Generations are untrusted text: greedy decoding with ``max_tokens=400`` regularly stops in the middle
of a pair, and a small or badly served model writes anything at all. :func:`parse_pairs` therefore
keeps only pairs that are complete and well formed, and never raises, so one odd generation cannot end
a run that has been going for days on thousands of GPUs.

Rules (the released pipeline's, plus three checks it lacks, marked *):

- the generation is split on ``</END>``; whatever follows the last ``</END>`` is unfinished and dropped;
- a pair must hold exactly one ``<ANS>``; the part before it must start with ``<QUE>``;
- the answer must not be empty; * the question must not be empty either;
- * an answer holding ``<QUE>`` is a run-on of two pairs that lost its ``</END>``, and is dropped;
- * a pair holding a prompt marker (``<CON>``, ``</CON>``, ``<s>``, ``</s>``) is the model echoing the
  prompt, and is dropped;
- questions are de-duplicated case-insensitively, keeping the first.
"""

from __future__ import annotations

from ipt_engine.synth.prompt import ANSWER, END, QUESTION

_PROMPT_MARKERS = ("<CON>", "</CON>", "<s>", "</s>")


def _parse_one(chunk: str) -> dict[str, str] | None:
    if chunk.count(ANSWER) != 1:
        return None
    q_part, a_part = chunk.split(ANSWER)
    q_part, answer = q_part.strip(), a_part.strip()
    if not q_part.startswith(QUESTION) or not answer or QUESTION in answer:
        return None
    question = q_part.replace(QUESTION, "").strip()
    if not question:
        return None
    if any(m in question or m in answer for m in _PROMPT_MARKERS):
        return None
    return {"Q": question, "A": answer}


def parse_pairs(generation: str) -> list[dict[str, str]]:
    """The complete, well-formed ``{"Q", "A"}`` pairs of ``generation`` (see module docstring).

    Anything that is not a string yields no pairs: engines report failures in odd ways (``None``, an
    exception object), and the caller should not have to guard every call.
    """
    if not isinstance(generation, str):
        return []
    pairs: list[dict[str, str]] = []
    seen: set[str] = set()
    for chunk in generation.split(END)[:-1]:  # the last piece is unfinished (or empty)
        pair = _parse_one(chunk)
        if pair is None:
            continue
        key = pair["Q"].lower()
        if key in seen:
            continue
        seen.add(key)
        pairs.append(pair)
    return pairs
