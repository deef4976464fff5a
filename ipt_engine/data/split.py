"""Held-out splits by document hash: ``ipt convert --split holdout=0.01``.

A document goes to the held-out side when the first 8 bytes of the BLAKE2b hash of its text, read as a
fraction of 2**64, fall below the requested fraction. The decision depends on the text alone — not on
its position, the input files, ``--workers`` or a random seed — so it is the same on every run and
machine, a duplicated text always lands on the same side (held-out documents never leak into training
as copies), and any other stage can make the same decision: the pipeline splits synthesized read
collections by the hash of each entry's ``context``, so the augmented texts of a held-out raw document
are held out too.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ipt_engine.errors import UserError

if TYPE_CHECKING:
    from ipt_engine.data.convert import ConvertOptions

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class Split:
    """``NAME=FRACTION``: documents whose hash falls below ``fraction`` go to the ``name`` side."""

    name: str
    fraction: float

    def sibling(self, output: str | Path) -> Path:
        """Where the held-out side is written: ``OUT-NAME`` beside ``OUT`` (never inside it, so a loader
        pointed at ``OUT`` cannot pick the held-out shards up)."""
        out = Path(output)
        return out.with_name(f"{out.name}-{self.name}")


def parse_split(spec: str) -> Split:
    """``holdout=0.01`` -> ``Split("holdout", 0.01)``; anything else is a one-line user error."""
    name, sep, raw = spec.partition("=")
    name = name.strip()
    if not sep or not _NAME.match(name):
        raise UserError(f"--split {spec!r}: expected NAME=FRACTION, e.g. holdout=0.01")
    try:
        fraction = float(raw)
    except ValueError:
        raise UserError(f"--split {spec!r}: {raw!r} is not a number") from None
    if not 0.0 < fraction < 1.0:
        raise UserError(f"--split {spec!r}: the fraction must be strictly between 0 and 1")
    return Split(name, fraction)


def hash_fraction(text: str) -> float:
    """The text's position in [0, 1): BLAKE2b-64 of its UTF-8 bytes divided by 2**64."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def is_heldout(text: str, fraction: float) -> bool:
    """Whether a document with this text belongs to the held-out side of a ``fraction`` split."""
    return hash_fraction(text) < fraction


def split_sides(opts: ConvertOptions, spec: str | None, held_out: str | Path | None = None) -> list[ConvertOptions]:
    """The conversions that ``--split spec`` makes of ``opts``: the training side into ``opts.output``
    and the held-out side into ``held_out`` (default ``OUT-NAME``); without a split, ``opts`` alone."""
    import dataclasses

    if not spec:
        return [opts]
    split = parse_split(spec)
    target = str(held_out) if held_out else str(split.sibling(opts.output))
    return [dataclasses.replace(opts, select=(split.fraction, False)),
            dataclasses.replace(opts, output=target, select=(split.fraction, True))]
