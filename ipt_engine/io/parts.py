"""Record-to-rows stages written as ``part-NNNNN.jsonl.zst`` files (synthesize, templify).

The input record stream is cut into parts of ``part_size`` records. Each part is processed (possibly
in a worker process), written atomically, and only then listed in the manifest together with the input
position just after it and the length of ``rejects.jsonl``. Parts are committed strictly in order, so
the manifest always describes a prefix of the uninterrupted run: a resumed run reopens the inputs at
the saved position and redoes only the part that was in flight. Nothing is lost, nothing is written
twice, and the output does not depend on the number of workers.
"""

from __future__ import annotations

import collections
import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ipt_engine.errors import UserError
from ipt_engine.io.atomic import atomic_write_bytes
from ipt_engine.io.manifest import prepare_output, save_manifest
from ipt_engine.io.readers import Mode, Record, count_records, read_records
from ipt_engine.io.rejects import RejectLog

# process(part_index, records) -> (rows to write, numeric stats to add up)
PartFn = Callable[[int, list[Record]], tuple[list[dict[str, Any]], dict[str, float]]]


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
) -> PartStageResult:
    """Run a record-to-rows stage with ordered, atomic, resumable part commits (see module docstring).

    ``process`` must be a picklable top-level callable when ``workers > 1``. ``validate``, if given,
    checks each record that read cleanly and returns a problem (or None); a problem is handled like a
    read error (``--on-error``), so it is reported with the record's file and line. ``limit`` stops
    after that many input records in total (a resumed run counts what earlier runs consumed).
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
    total = sum(totals) if all(t is not None for t in totals) else None
    if limit is not None:
        total = limit if total is None else min(total, limit)
    bar = tqdm(total=total, initial=int(ckpt["records"]), unit=progress_unit, desc=stage, dynamic_ncols=True)
    t0 = time.perf_counter()

    def parts() -> Iterator[tuple[int, list[Record], tuple[int, int], int]]:
        """Cut the stream into (part index, good records, position after, records consumed)."""
        index = len(manifest["outputs"])
        position = tuple(ckpt["position"])
        good: list[Record] = []
        consumed = 0
        remaining = None if limit is None else limit - int(ckpt["records"])
        for src_i, rec in iter_positioned(sources, position, text_field=text_field, mode=mode):  # type: ignore[arg-type]
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
                yield index, good, position, consumed
                index, good, consumed = index + 1, [], 0
        if consumed:
            yield index, good, position, consumed

    pool = None

    def outcomes() -> Iterator[tuple[tuple[int, tuple[int, int], int], tuple[list[dict[str, Any]], dict[str, float]]]]:
        """Processed parts in order. With workers, at most 2 parts per worker are read ahead, so memory
        stays bounded by the part size whatever the input size (``Pool.imap`` would read it all)."""
        if pool is None:
            for index, good, position, consumed in parts():
                yield (index, position, consumed), process(index, good)
            return
        inflight: collections.deque = collections.deque()
        for index, good, position, consumed in parts():
            inflight.append(((index, position, consumed), pool.apply_async(_call, ((process, index, good),))))
            if len(inflight) >= 2 * workers:
                meta, res = inflight.popleft()
                yield meta, res.get()
        while inflight:
            meta, res = inflight.popleft()
            yield meta, res.get()

    try:
        if workers > 1:
            import multiprocessing as mp

            pool = mp.get_context("spawn").Pool(workers)
        for (index, position, consumed), (rows, delta) in outcomes():
            name = write_part(out, index, rows)
            for k, v in delta.items():
                stats[k] = stats.get(k, 0) + v
            ckpt = {
                "position": list(position),
                "rejects_bytes": rejects.sync(),
                "records": int(ckpt["records"]) + consumed,
            }
            manifest["outputs"].append({"file": name, "rows": len(rows), "records": consumed})
            manifest["stats"] = stats
            manifest["checkpoint"] = ckpt
            save_manifest(out, manifest)
            result.rows += len(rows)
            result.records += consumed
            result.parts_written += 1
            bar.update(consumed)
    finally:
        if pool is not None:
            pool.terminate()
        bar.close()
        rejects.close()
    result.rejects = rejects.count
    manifest["stats"] = stats
    manifest["stats"]["rejects"] = _count_lines(out / "rejects.jsonl")
    manifest["complete"] = True
    save_manifest(out, manifest)
    result.stats = stats
    result.seconds = time.perf_counter() - t0
    return result


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return sum(1 for _ in f)
