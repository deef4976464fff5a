"""The templify stage: read collections in, ``{"text": ...}`` rows out, in resumable atomic parts.

The template choices of a collection are seeded from the run's seed and the collection's position
(input file number and line), so the output does not depend on ``workers`` or ``part_size``; a resumed
run continues where the last committed part ended (:func:`ipt_engine.io.parts.run_part_stage`).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ipt_engine.io.parts import PartStageResult


def collection_seed(seed: int, source_number: int, line: int) -> int:
    """A 64-bit seed from the run's seed and the collection's position; stable across processes."""
    digest = hashlib.blake2b(f"{seed}:{source_number}:{line}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def validate_record(record: Any) -> str | None:
    """What is wrong with a read collection (None: nothing), reported with its file and line."""
    from ipt_engine.templify import collection_error

    return collection_error(record.value)


def process_part(
    seed: int, source_numbers: dict[str, int], index: int, records: list[Any]
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Templify one part; top level (and bound with functools.partial) so worker processes can run it."""
    from ipt_engine.templify import templify_valid

    rows: list[dict[str, Any]] = []
    pairs = entries = 0
    for rec in records:
        collection = rec.value
        entries += len(collection)
        pairs += sum(len(e["QA_list"]) for e in collection)
        s = collection_seed(seed, source_numbers[rec.source], rec.index)
        rows.extend({"text": t} for t in templify_valid(collection, s))
    stats: dict[str, float] = {"collections": len(records), "entries": entries, "pairs": pairs, "texts": len(rows)}
    return rows, stats


def run_templify(inputs: Sequence[str | Path], output: str | Path, *, seed: int = 0, workers: int = 1,
                 part_size: int = 10_000, resume: bool = False, overwrite: bool = False,
                 on_error: str = "fail") -> PartStageResult:
    """Templify every read collection under ``inputs`` into ``output`` (see the module docstring)."""
    from ipt_engine.errors import UserError
    from ipt_engine.io.discover import expand_inputs
    from ipt_engine.io.parts import run_part_stage

    for flag, value in (("--workers", workers), ("--part-size", part_size)):
        if value < 1:
            raise UserError(f"{flag}: must be >= 1, got {value}")
    sources = expand_inputs([str(i) for i in inputs])
    numbers = {str(s): i for i, s in enumerate(sources)}
    return run_part_stage(
        stage="templify",
        sources=sources,
        output=output,
        params={"seed": seed},
        process=functools.partial(process_part, seed, numbers),
        part_size=part_size,
        resume=resume,
        overwrite=overwrite,
        on_error=on_error,
        mode="json",
        workers=workers,
        progress_unit="coll",
        reject_payload=None,
        validate=validate_record,
    )
