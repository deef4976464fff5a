"""Record-to-rows stages written as ``part-NNNNN.jsonl.zst`` files (synthesize, templify).

The input record stream is cut into parts of ``part_size`` records. Each part is processed (possibly
in a worker process), written atomically, and only then listed in the manifest together with the input
position just after it and the length of ``rejects.jsonl``. Parts are committed strictly in order, so
the manifest always describes a prefix of the uninterrupted run: a resumed run reopens the inputs at
the saved position and redoes only the part that was in flight. Nothing is lost, nothing is written
twice, and the output does not depend on the number of workers. The layout and the read-collection
format: docs/ARCHITECTURE.md, "Read-collection parts".

Where parts run is pluggable (:class:`PartExecutor`): in this process, in a local process pool
(``workers``), or on a cluster (``executor``, e.g. Ray actors). The commit logic is the same for all
of them. An executor may give up on a part (:class:`PartFailed`, e.g. after its retries on dead
cluster workers): the run then finishes the other parts, writes their files and lists them under
``"ahead"`` in the manifest (they cannot be committed past the hole), records the failure under
``"failed"``, and does not mark the stage complete. ``--resume`` redoes only the failed part and
adopts the parts written ahead of it without running them again.
"""

from __future__ import annotations

import collections
import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ipt_engine.errors import UserError
from ipt_engine.io.atomic import atomic_write_bytes
from ipt_engine.io.manifest import prepare_output, save_manifest
from ipt_engine.io.readers import Mode, Record, count_records, read_records
from ipt_engine.io.rejects import RejectLog

# process(part_index, records) -> (rows to write, numeric stats to add up)
PartFn = Callable[[int, list[Record]], tuple[list[dict[str, Any]], dict[str, float]]]


class PartFailed(Exception):
    """An executor gave up on one part; the run goes on with the others and ends incomplete."""

    def __init__(self, index: int, error: str, attempts: int) -> None:
        super().__init__(f"{part_name(index)} failed after {attempts} attempt(s): {error}")
        self.index, self.error, self.attempts = index, error, attempts


class PartExecutor(Protocol):
    """Runs parts somewhere: ``submit`` hands one over, ``result`` blocks until that one is done.

    ``result`` is called in submission order; ``capacity`` parts at most are submitted and not yet
    collected, so memory stays bounded by the part size. ``result`` returns the part's (rows, stats)
    or raises :class:`PartFailed`; any other exception ends the run (the part is redone on resume).
    """

    capacity: int

    def submit(self, index: int, records: list[Record]) -> Any: ...

    def result(self, handle: Any) -> tuple[list[dict[str, Any]], dict[str, float]]: ...

    def close(self) -> None: ...


class InlineExecutor:
    """Parts run in this process, one at a time, when they are collected."""

    capacity = 1

    def __init__(self, process: PartFn) -> None:
        self.process = process

    def submit(self, index: int, records: list[Record]) -> Any:
        return index, records

    def result(self, handle: Any) -> tuple[list[dict[str, Any]], dict[str, float]]:
        return self.process(*handle)

    def close(self) -> None:
        pass


class PoolExecutor:
    """Parts run in a local spawn pool of ``workers`` processes, two per worker in flight."""

    def __init__(self, process: PartFn, workers: int) -> None:
        import multiprocessing as mp

        self.process = process
        self.capacity = 2 * workers
        self.pool = mp.get_context("spawn").Pool(workers)

    def submit(self, index: int, records: list[Record]) -> Any:
        return self.pool.apply_async(_call, ((self.process, index, records),))

    def result(self, handle: Any) -> tuple[list[dict[str, Any]], dict[str, float]]:
        done: tuple[list[dict[str, Any]], dict[str, float]] = handle.get()
        return done

    def close(self) -> None:
        self.pool.terminate()


def part_name(index: int) -> str:
    return f"part-{index:05d}.jsonl.zst"


def encode_rows(rows: list[dict[str, Any]], level: int = 3) -> bytes:
    import zstandard

    buf = io.BytesIO()
    for row in rows:
        buf.write(json.dumps(row, ensure_ascii=False).encode("utf-8"))
        buf.write(b"\n")
    return zstandard.ZstdCompressor(level=level).compress(buf.getvalue())


def write_part(directory: Path, index: int, rows: list[dict[str, Any]]) -> str:
    name = part_name(index)
    atomic_write_bytes(directory / name, encode_rows(rows))
    return name


@dataclass
class PartStageResult:
    manifest: dict[str, Any]
    stats: dict[str, float] = field(default_factory=dict)
    records: int = 0
    rejects: int = 0
    rows: int = 0
    parts_written: int = 0
    seconds: float = 0.0
    already_complete: bool = False
    failed: list[dict[str, Any]] = field(default_factory=list)
    """Parts an executor gave up on (index, file, error, attempts); the stage is then not complete."""


def iter_positioned(
    sources: list[Path], start: tuple[int, int], *, text_field: str, mode: Mode
) -> Iterator[tuple[int, Record]]:
    """Yield (source number, record) from position ``start`` = (source number, records to skip)."""
    first, skip = start
    for i in range(first, len(sources)):
        for rec in read_records(sources[i], text_field=text_field, mode=mode, start=skip if i == first else 0):
            yield i, rec


def _call(args: tuple[PartFn, int, list[Record]]) -> tuple[list[dict[str, Any]], dict[str, float]]:
    fn, index, records = args
    return fn(index, records)


def run_part_stage(
    *,
    stage: str,
    sources: list[Path],
    output: str | Path,
    params: dict[str, Any],
    process: PartFn,
    part_size: int,
    resume: bool,
    overwrite: bool = False,
    on_error: str = "fail",
    text_field: str = "text",
    mode: Mode = "text",
    workers: int = 1,
    progress_unit: str = "rec",
    reject_payload: Callable[[Record], Any] | None = None,
    validate: Callable[[Record], str | None] | None = None,
    limit: int | None = None,
    executor: PartExecutor | None = None,
) -> PartStageResult:
    """Run a record-to-rows stage with ordered, atomic, resumable part commits (see module docstring).

    ``process`` must be a picklable top-level callable when ``workers > 1``. ``validate``, if given,
    checks each record that read cleanly and returns a problem (or None); a problem is handled like a
    read error (``--on-error``), so it is reported with the record's file and line. ``limit`` stops
    after that many input records in total (a resumed run counts what earlier runs consumed).
    ``executor`` runs the parts instead of ``process`` here or in a pool of ``workers`` (it is closed
    at the end either way).
    """
    from tqdm import tqdm

    if part_size < 1:
        raise UserError(f"--part-size must be at least 1, got {part_size}")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}")
    out = Path(output)
    manifest = prepare_output(out, stage, sources, params, resume=resume, overwrite=overwrite)
    result = PartStageResult(manifest=manifest)
    if manifest.get("complete"):
        result.already_complete = True
        result.stats = dict(manifest.get("stats", {}))
        return result

    ckpt = manifest.get("checkpoint") or {"position": [0, 0], "rejects_bytes": 0, "records": 0}
    stats: dict[str, float] = dict(manifest.get("stats", {}))
    rejects = RejectLog(out, keep_bytes=int(ckpt["rejects_bytes"]))
    totals = [count_records(s) for s in sources]
    known = [t for t in totals if t is not None]
    total = sum(known) if len(known) == len(totals) else None
    if limit is not None:
        total = limit if total is None else min(total, limit)
    bar = tqdm(total=total, initial=int(ckpt["records"]), unit=progress_unit, desc=stage, dynamic_ncols=True)
    t0 = time.perf_counter()

    def parts() -> Iterator[tuple[int, list[Record], tuple[int, int], int, int]]:
        """Cut the stream into (part index, good records, position after, records consumed, rejects
        bytes after). The rejects length is taken when the part is cut, not when it is committed: with
        parts read ahead, the log already holds later parts' rejects by then, and a resume that kept
        them would list them twice."""
        index = len(manifest["outputs"])
        position = tuple(ckpt["position"])
        good: list[Record] = []
        consumed = 0
        remaining = None if limit is None else limit - int(ckpt["records"])
        for src_i, rec in iter_positioned(sources, position, text_field=text_field, mode=mode):
            if remaining is not None:
                if remaining <= 0:
                    break
                remaining -= 1
            consumed += 1
            position = (src_i, rec.index) if rec.index else (src_i + 1, 0)
            if rec.error is None and validate is not None:
                rec.error = validate(rec)
            if rec.error is not None:
                if on_error == "fail":
                    raise UserError(f"{rec.location}: {rec.error}")
                rejects.add(rec.source, rec.index, rec.error, reject_payload(rec) if reject_payload else None)
            else:
                good.append(rec)
            if consumed == part_size:
                yield index, good, position, consumed, rejects.size
                index, good, consumed = index + 1, [], 0
        if consumed:
            yield index, good, position, consumed, rejects.size

    # Parts written by an earlier run past a part that failed there: adopted, not run again, when the
    # stream is cut the same way (the resume check guarantees the inputs and parameters are the same).
    ahead: dict[str, dict[str, Any]] = manifest.pop("ahead", None) or {}
    manifest.pop("failed", None)
    runner: PartExecutor | None = None
    Meta = tuple[int, tuple[int, int], int, int]

    def adoptable(index: int, position: tuple[int, int]) -> dict[str, Any] | None:
        entry = ahead.get(str(index))
        if entry and tuple(entry["position"]) == tuple(position) and (out / entry["file"]).is_file():
            return entry
        return None

    def outcomes() -> Iterator[tuple[Meta, Any]]:
        """Processed parts in order: (meta, (rows, stats)), (meta, PartFailed) or (meta, adopted entry).
        At most ``runner.capacity`` parts are read ahead, so memory stays bounded by the part size
        whatever the input size (``Pool.imap`` would read it all)."""
        nonlocal runner
        inflight: collections.deque[Any] = collections.deque()

        def collect() -> tuple[Meta, Any]:
            meta, kind, handle = inflight.popleft()
            if kind == "adopted":
                return meta, handle
            try:
                return meta, runner.result(handle)  # type: ignore[union-attr]
            except PartFailed as failure:
                return meta, failure

        for index, good, position, consumed, rejects_at in parts():
            meta = (index, position, consumed, rejects_at)
            entry = adoptable(index, position)
            if entry is not None:
                inflight.append((meta, "adopted", entry))
            else:
                if runner is None:  # started on first use: a run with nothing left to do starts nothing
                    runner = executor or (PoolExecutor(process, workers) if workers > 1 else InlineExecutor(process))
                inflight.append((meta, "run", runner.submit(index, good)))
            if len(inflight) >= (runner.capacity if runner is not None else 1):
                yield collect()
        while inflight:
            yield collect()

    failed: list[dict[str, Any]] = []

    def save() -> None:
        for key, value in (("ahead", ahead), ("failed", failed)):
            if value:
                manifest[key] = value
            else:
                manifest.pop(key, None)
        save_manifest(out, manifest)

    try:
        for (index, position, consumed, rejects_at), outcome in outcomes():
            if isinstance(outcome, PartFailed):
                failed.append({"index": index, "file": part_name(index), "error": outcome.error,
                               "attempts": outcome.attempts})
                save()
                continue
            if isinstance(outcome, dict):  # adopted from an earlier run's "ahead"
                name, n_rows, delta, extra = outcome["file"], outcome["rows"], outcome["stats"], outcome.get("part")
            else:
                rows, delta = outcome
                delta = dict(delta)
                extra = delta.pop("_part", None)  # what the executor says about the part (actor, attempts)
                name, n_rows = write_part(out, index, rows), len(rows)
            entry = {"file": name, "rows": n_rows, "records": consumed, **({"part": extra} if extra else {})}
            if failed:  # a hole before this part: keep it on disk, commit it on resume
                rejects.sync()
                ahead[str(index)] = {**entry, "position": list(position), "stats": delta}
                save()
                result.parts_written += 1
                bar.update(consumed)
                continue
            ahead.pop(str(index), None)
            for k, v in delta.items():
                stats[k] = stats.get(k, 0) + v
            rejects.sync()
            ckpt = {
                "position": list(position),
                "rejects_bytes": rejects_at,
                "records": int(ckpt["records"]) + consumed,
            }
            manifest["outputs"].append(entry)
            manifest["stats"] = stats
            manifest["checkpoint"] = ckpt
            save()
            result.rows += n_rows
            result.records += consumed
            result.parts_written += 1
            postfix = getattr(runner, "progress_postfix", None)  # a cluster executor's chains and workers
            done = f"{len(manifest['outputs'])}{f'/{-(-total // part_size)}' if total else ''} parts"
            bar.set_postfix_str(done + (f", {postfix()}" if postfix is not None else ""), refresh=False)
            bar.update(consumed)
    finally:
        if runner is not None:
            runner.close()
        elif executor is not None:
            executor.close()
        bar.close()
        rejects.close()
    result.rejects = rejects.count
    result.stats = stats
    result.seconds = time.perf_counter() - t0
    if failed:
        result.failed = failed
        manifest["stats"] = stats
        save()
        return result
    manifest["stats"] = stats
    manifest["stats"]["rejects"] = _count_lines(out / "rejects.jsonl")
    manifest["complete"] = True
    manifest.pop("ahead", None)
    save_manifest(out, manifest)
    return result


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return sum(1 for _ in f)
