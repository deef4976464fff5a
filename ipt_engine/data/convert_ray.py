"""``ipt convert --ray``: conversion as Ray tasks over disjoint input ranges, one MDS partition each.

The driver (this process) plans the ranges (:mod:`ipt_engine.data.ranges`), keeps the manifest and is
the only writer of the root files; each Ray task converts one range with the local converter into a
hidden temporary directory under the output, and renames it to ``part-NNNNN/`` once every file in it is
fsynced. A partition is therefore either absent or whole, whoever looks and whenever the task died.
The driver records a partition in the manifest when its task returns; a resumed run adopts partitions
that were renamed into place but not yet recorded, and redoes the rest. When every range is in, the
root ``index.json`` is Streaming's ``merge_index`` over the partitions' indexes (so the stock
``StreamingDataset`` reads the whole output as one dataset), rewritten atomically, and ``ipt.json``
carries the summed statistics that ``ipt train`` and ``ipt inspect`` read.

Samples never cross a range boundary, so the samples differ from a local run's (each range packs its
own documents) while the documents, and so the token multiset, are the same. A task whose worker dies
is run again by Ray (``max_retries``); its half-written temporary directory is discarded, so nothing
is lost or written twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ipt_engine.data.convert import (
    ConvertOptions,
    ConvertResult,
    _tokenizer_setup,
    convert,
    output_params,
    validate,
    write_ipt_json,
)
from ipt_engine.data.ranges import Segment, plan_ranges
from ipt_engine.errors import UserError
from ipt_engine.io.atomic import atomic_open, atomic_write_bytes, fsync_dir
from ipt_engine.io.discover import expand_inputs
from ipt_engine.io.manifest import MANIFEST, load_manifest, prepare_output, save_manifest
from ipt_engine.io.rejects import REJECTS

PART = "part-{:05d}"
TMP_PREFIX = ".tmp-"
# Fault injection for tests: "RANGE:SHARDS:MARKER" SIGKILLs the worker converting range RANGE after it
# has committed SHARDS shards, once (the marker file records that it happened).
KILL_ENV = "IPT_CONVERT_KILL_RANGE"
SUM_STATS = ("samples", "tokens", "documents", "pieces", "full_samples")


@dataclasses.dataclass
class RayConvertOptions:
    address: str = "local"
    range_bytes: int = 64 << 20  # input bytes per range (task)
    max_retries: int = 2  # Ray re-runs of a range whose worker died
    num_cpus: int | None = None  # size of a `local` cluster


def part_name(k: int) -> str:
    return PART.format(k)


def _fsync_tree(root: Path) -> None:
    """Make every file and directory entry under ``root`` durable before it is renamed into place."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(dirpath)


def _partition_summary(part: Path) -> dict[str, Any] | None:
    """A committed partition's statistics, or None when ``part`` is not a finished partition."""
    m = load_manifest(part) if (part / "index.json").is_file() else None
    if not m or not m.get("complete"):
        return None
    shards = json.loads((part / "index.json").read_text())["shards"]
    return {"stats": m["stats"], "shards": len(shards)}


def _kill_hook(k: int, spec: str | None) -> Callable[[int], None] | None:
    """The shard hook that kills this worker mid-range once, as :data:`KILL_ENV` asks."""
    if not spec:
        return None
    target, after, marker = spec.split(":", 2)
    if int(target) != k:
        return None

    def hook(n_shards: int) -> None:
        if n_shards >= int(after) and not os.path.exists(marker):
            with atomic_open(marker, "w") as f:
                f.write(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def convert_range(k: int, segments: list[Segment], opts: ConvertOptions, out_root: str,
                  kill_spec: str | None = None) -> dict[str, Any]:
    """Ray task: convert range ``k`` into ``out_root/part-k`` atomically; return its summary."""
    out = Path(out_root)
    final = out / part_name(k)
    done = _partition_summary(final)
    if done is not None:  # an earlier attempt got as far as the rename
        return {**done, "seconds": 0.0}
    tmp = out / f"{TMP_PREFIX}{part_name(k)}-{uuid.uuid4().hex[:8]}"
    local = dataclasses.replace(
        opts, inputs=[], segments=segments, output=str(tmp), workers=0, progress=False, resume=False,
        overwrite=False, shard_hook=_kill_hook(k, kill_spec),
    )
    t0 = time.perf_counter()
    res = convert(local)
    _fsync_tree(tmp)
    try:
        os.rename(tmp, final)
    except OSError:
        if _partition_summary(final) is None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another attempt committed the same range first
    fsync_dir(out)
    return {"stats": res.stats, "shards": _partition_summary(final)["shards"],  # type: ignore[index]
            "seconds": time.perf_counter() - t0}


def _merge_index(out: Path, names: list[str]) -> int:
    """Root ``index.json`` over the partitions, by Streaming's own merge, then rewritten atomically."""
    from streaming.base.util import merge_index

    root = out / "index.json"
    with contextlib.suppress(FileNotFoundError):
        root.unlink()  # merge_index moves its result into place and refuses an existing file
    logging.disable(logging.WARNING)  # it logs a warning per call about its temporary folder
    try:
        merge_index([str(out / n / "index.json") for n in names], str(out))
    finally:
        logging.disable(logging.NOTSET)
    data = root.read_bytes()
    atomic_write_bytes(root, data)  # merge_index writes in place without fsync
    return len(json.loads(data)["shards"])


def _merge_rejects(out: Path, names: list[str]) -> int:
    parts = [out / n / REJECTS for n in names if (out / n / REJECTS).is_file()]
    target = out / REJECTS
    if not parts:
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        return 0
    lines = 0
    with atomic_open(target, "wb") as f:
        for p in parts:
            data = p.read_bytes()
            lines += data.count(b"\n")
            f.write(data)
    return lines


def _task_error(ray: Any, e: BaseException) -> tuple[str, bool]:
    """(one line, whether it is the user's input) for a task that raised or died."""
    if isinstance(e, ray.exceptions.RayTaskError):
        cause = e.cause
        if isinstance(cause, UserError):
            return str(cause), True
        return f"{type(cause).__name__}: {str(cause).strip().splitlines()[0] if str(cause).strip() else ''}", False
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}", False


def convert_on_ray(opts: ConvertOptions, ray_opts: RayConvertOptions) -> ConvertResult:
    from ipt_engine.ray_cluster import check_address, cluster_cpus, ray_session

    validate(opts)
    check_address(ray_opts.address)
    # The driver loads the tokenizer and then starts Ray's processes; tokenizers warns at every fork
    # after its thread pool ran. Tasks tokenize in their own processes anyway.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if ray_opts.range_bytes < 1 << 10:
        raise UserError(f"--range-bytes must be at least 1 KiB, got {ray_opts.range_bytes}")
    if ray_opts.max_retries < 0:
        raise UserError(f"--max-range-retries must be 0 or more, got {ray_opts.max_retries}")
    sources = expand_inputs(opts.inputs)
    _tok, fingerprint, bos, _eos = _tokenizer_setup(opts.tokenizer)
    params = output_params(opts, fingerprint, bos)
    # A ranged output packs each range apart, so it is not a local run's output: neither resumes the other.
    params["layout"] = "ranges"
    params["range_bytes"] = ray_opts.range_bytes
    out = Path(opts.output).resolve()
    manifest = prepare_output(out, "convert", sources, params, resume=opts.resume, overwrite=opts.overwrite)
    result = ConvertResult(output=out)
    if manifest.get("complete"):
        result.already_complete, result.stats = True, manifest["stats"]
        return result
    t0 = time.perf_counter()
    if manifest.get("ranges") is None:
        # Absolute paths: tasks run in other working directories, on other nodes.
        plan = plan_ranges([Path(os.path.abspath(p)) for p in sources], ray_opts.range_bytes)
        manifest["ranges"] = [[s.to_json() for s in r] for r in plan]
        manifest["committed"] = {}
        save_manifest(out, manifest)
    ranges = [[Segment.from_json(d) for d in r] for r in manifest["ranges"]]
    names = [part_name(k) for k in range(len(ranges))]
    committed: dict[str, Any] = manifest.setdefault("committed", {})
    for name in names:  # renamed into place by a task whose return this driver never saw
        if name not in committed and (found := _partition_summary(out / name)) is not None:
            committed[name] = {**found, "seconds": 0.0, "adopted": True}
    for stale in out.glob(f"{TMP_PREFIX}part-*"):
        shutil.rmtree(stale, ignore_errors=True)
    manifest["resumed_ranges"] = sum(1 for n in names if n in committed)
    save_manifest(out, manifest)

    pending = [k for k, n in enumerate(names) if n not in committed]
    failures: dict[str, str] = {}
    user_error: str | None = None
    local_opts = dataclasses.replace(opts, shard_hook=None, progress=False)
    kill_spec = os.environ.get(KILL_ENV)
    new_tokens = 0
    if pending:
        from tqdm import tqdm

        with ray_session(ray_opts.address, num_cpus=ray_opts.num_cpus) as ray:
            task = ray.remote(num_cpus=1, max_retries=ray_opts.max_retries, retry_exceptions=False)(convert_range)
            limit = 2 * cluster_cpus(ray)
            inflight: dict[Any, int] = {}
            bar = tqdm(total=len(names), initial=len(names) - len(pending), unit="range", desc="convert (ray)",
                       disable=not opts.progress, dynamic_ncols=True)
            try:
                while pending or inflight:
                    while pending and user_error is None and len(inflight) < limit:
                        k = pending.pop(0)
                        inflight[task.remote(k, ranges[k], local_opts, str(out), kill_spec)] = k
                    if not inflight:
                        break
                    ready, _ = ray.wait(list(inflight), num_returns=1)
                    for ref in ready:
                        k = inflight.pop(ref)
                        try:
                            summary = ray.get(ref)
                        except Exception as e:  # a task's error or a worker Ray gave up on
                            line, is_user = _task_error(ray, e)
                            if is_user:
                                user_error = user_error or line
                            else:
                                failures[names[k]] = line
                            continue
                        committed[names[k]] = summary
                        new_tokens += int(summary["stats"].get("tokenized_tokens_this_run", 0))
                        save_manifest(out, manifest)
                        bar.update(1)
            finally:
                bar.close()
                for ref in inflight:
                    ray.cancel(ref, force=True)
    if user_error is not None:
        raise UserError(user_error)
    if failures:
        first = next(iter(failures.items()))
        raise UserError(f"{len(failures)} range(s) failed after {ray_opts.max_retries} retries, first "
                        f"{first[0]}: {first[1]}; the others are committed, rerun with --resume")

    # Every range is in: the root files, then the manifest says complete.
    n_shards = _merge_index(out, names)
    rejects = _merge_rejects(out, names)
    stats: dict[str, int] = {k: 0 for k in SUM_STATS}
    for name in names:
        for key in SUM_STATS:
            stats[key] += int(committed[name]["stats"].get(key, 0))
    stats["max_seq_len"] = opts.max_seq_len
    stats["rejects"] = rejects
    stats["ranges"] = len(names)
    stats["shards"] = n_shards
    retries = sum(1 for _ in out.glob(f"{TMP_PREFIX}part-*"))  # temporaries are left only by dead attempts
    for stale in out.glob(f"{TMP_PREFIX}part-*"):
        shutil.rmtree(stale, ignore_errors=True)
    write_ipt_json(out, opts, fingerprint, bos, manifest["inputs"], stats, partitions=names)
    manifest["stats"] = stats
    manifest["retried_attempts"] = int(manifest.get("retried_attempts", 0)) + retries
    manifest["complete"] = True
    save_manifest(out, manifest)
    result.stats = {**stats, "tokenized_tokens_this_run": new_tokens}
    result.seconds = time.perf_counter() - t0
    return result


def range_fill_rates(out: str | Path) -> dict[str, float]:
    """Fill rate of every partition of a ranged output (tokens / (samples x N)), from its manifest."""
    m = load_manifest(out)
    if not m or "committed" not in m:
        raise UserError(f"{out}: not the output of `ipt convert --ray` ({MANIFEST} lists no ranges)")
    n = int(m["params"]["max_seq_len"])
    return {name: c["stats"]["tokens"] / max(1, c["stats"]["samples"] * n) for name, c in sorted(m["committed"].items())}
