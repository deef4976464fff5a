"""``templify``: a read collection in, instruction-augmented pre-training texts out.

The collection is cut into *runs*: an entry starts a new run unless its ``inherit_from_prev`` is true
(it was synthesized with its predecessor in the prompt and produced pairs, so the two form one few-shot
demonstration). Each run with pairs becomes one text in one drawn style; entries without pairs are
emitted as their raw text, so no input text is ever lost. Whitespace-only texts are not emitted.
"""

from __future__ import annotations

import random
from typing import Any

from ipt_engine.templify.pairs import Pair, parse_pair
from ipt_engine.templify.render import draw_style, render_run
from ipt_engine.templify.validate import collection_error


def runs(collection: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Entries grouped by ``inherit_from_prev``, in order (the first entry always starts a run)."""
    out: list[list[dict[str, Any]]] = []
    for entry in collection:
        if out and entry.get("inherit_from_prev", False):
            out[-1].append(entry)
        else:
            out.append([entry])
    return out


def templify_valid(collection: list[dict[str, Any]], seed: int) -> list[str]:
    """:func:`templify` without the input check, for callers that validated already."""
    rng = random.Random(seed)
    texts: list[str] = []
    for run in runs(collection):
        few_shot: list[tuple[str, list[Pair]]] = []
        for entry in run:
            if entry["QA_list"]:
                few_shot.append((entry["context"], [parse_pair(qa) for qa in entry["QA_list"]]))
            elif entry["context"].strip():
                texts.append(entry["context"])
        if few_shot:
            style = draw_style(rng, min(len(p) for _, p in few_shot))
            texts.append(render_run(few_shot, style, rng))
    return texts


def templify(read_collection: list[dict[str, Any]], seed: int) -> list[str]:
    """Render one read collection as pre-training texts; the same seed gives the same texts.

    Raises ``ValueError`` with a one-line reason if ``read_collection`` is not a read collection.
    """
    error = collection_error(read_collection)
    if error is not None:
        raise ValueError(error)
    return templify_valid(read_collection, seed)
