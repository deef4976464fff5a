"""Recognizing the kind of a synthesized pair, and re-rendering multiple-choice options.

The synthesizer writes four kinds of pairs in one surface format, distinguished by markers it learned
from its fine-tuning data:

- multiple choice: the question holds ``\\nOptions:\\n- `` followed by options separated by ``\\n- ``;
- chain of thought: the question ends with ``\\nLet's think step by step.`` and the answer holds
  ``\\nTherefore, the answer is `` between the reasoning and the final answer;
- both, and neither (free-form).

Templify re-renders each kind through its own templates, so the markers themselves do not become the
only way the pre-trained model ever sees options or reasoning. A pair whose markers are malformed (an
options block with no options, a trigger without a final answer) is kept as a free-form pair with its
text untouched: losing a pair is worse than rendering it plainly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

OPTIONS_MARK = "\nOptions:\n- "
OPTION_SEP = "\n- "
COT_TRIGGER = "\nLet's think step by step."
COT_ANSWER = "\nTherefore, the answer is "


@dataclass(slots=True)
class Pair:
    """A pair taken apart: the question stem, the final answer, and the options / reasoning if any."""

    question: str
    answer: str
    options: list[str] | None = None
    reasoning: str | None = None

    @property
    def kind(self) -> str:
        if self.options is not None:
            return "mc_cot" if self.reasoning is not None else "mc"
        return "cot" if self.reasoning is not None else "free"


def _split_cot(question: str, answer: str) -> tuple[str, str, str] | None:
    if not question.endswith(COT_TRIGGER) or answer.count(COT_ANSWER) != 1:
        return None
    stem = question[: -len(COT_TRIGGER)].strip()
    reasoning, final = (s.strip() for s in answer.split(COT_ANSWER))
    if not (stem and reasoning and final):
        return None
    return stem, reasoning, final


def _split_options(question: str) -> tuple[str, list[str]] | None:
    if question.count(OPTIONS_MARK) != 1:
        return None
    stem, block = question.split(OPTIONS_MARK)
    stem = stem.strip()
    options = [o.strip() for o in block.split(OPTION_SEP)]
    options = [o for o in options if o]
    if not stem or not options:
        return None
    return stem, options


def parse_pair(qa: dict[str, Any]) -> Pair:
    """Classify one ``{"Q", "A"}`` pair (see module docstring); never fails on a valid pair."""
    question, answer = qa["Q"], qa["A"]
    reasoning = None
    cot = _split_cot(question, answer)
    if cot is not None:
        question, reasoning, answer = cot
    mc = _split_options(question)
    if mc is not None:
        return Pair(mc[0], answer, mc[1], reasoning)
    return Pair(question, answer, None, reasoning)


def answer_index(pair: Pair) -> int | None:
    """Which option the answer names (exactly, then ignoring case and surrounding punctuation)."""
    assert pair.options is not None
    try:
        return pair.options.index(pair.answer)
    except ValueError:
        pass
    want = pair.answer.strip().strip(".").casefold()
    for i, option in enumerate(pair.options):
        if option.strip().strip(".").casefold() == want:
            return i
    return None
