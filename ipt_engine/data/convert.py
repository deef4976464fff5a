"""``ipt convert``: text records -> tokenized, packed MosaicML Streaming (MDS) shards.

Pipeline: one reader (this process) hands batches of texts to tokenizer workers; results come back in
submission order; an ordered packer turns documents into samples; the resumable MDS writer commits
shards and, with each, a checkpoint (see :mod:`ipt_engine.data.packing` for the resume point). The
output is therefore a pure function of the inputs and parameters, whatever ``--workers`` is, and
``--resume`` after ``kill -9`` yields exactly the samples of an uninterrupted run.
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ipt_engine.configuration import validate as validate_config
from ipt_engine.data.convert_config import ConvertConfig
from ipt_engine.errors import UserError
from ipt_engine.io.atomic import atomic_write_json
from ipt_engine.io.discover import expand_inputs
from ipt_engine.io.manifest import prepare_output, save_manifest
from ipt_engine.io.readers import count_records, read_records
from ipt_engine.io.rejects import RejectLog

COLUMNS = {"tokens": "ndarray:int32", "doc_lens": "ndarray:int32"}
IPT_JSON = "ipt.json"
FORMAT_VERSION = 1
_DEFAULTS = ConvertConfig()


@dataclass
class ConvertOptions:
    """One conversion: the :class:`ConvertConfig` fields, flattened (defaults and rules live there), plus
    this run's runtime options. :func:`convert` checks the config fields through the model."""

    inputs: list[str]
    output: str
    tokenizer: str = _DEFAULTS.tokenizer
    max_seq_len: int = _DEFAULTS.max_seq_len
    packing: Literal["concat", "bfd"] = _DEFAULTS.packing
    workers: int = 1
    compression: str | None = _DEFAULTS.compression
    on_error: Literal["fail", "skip"] = "fail"
    resume: bool = False
    overwrite: bool = False
    text_field: str = _DEFAULTS.text_field
    shard_size: int = _DEFAULTS.shard_size
    bfd_window: int = _DEFAULTS.bfd_window
    batch_chars: int = 1 << 20  # texts per tokenizer batch, by total characters
    progress: bool = True
    # Convert only these pieces of the inputs instead of ``inputs`` whole (one range of a distributed
    # conversion, see ipt_engine.data.ranges); ``inputs`` is then ignored.
    segments: list[Any] | None = None
    # Called with the number of shards committed so far after each one (fault-injection tests).
    shard_hook: Callable[[int], None] | None = None
    # ``(fraction, held_out)``: keep only the documents on one side of a hash split (ipt_engine.data.split);
    # ``ipt convert --split`` converts each side into its own output.
    select: tuple[float, bool] | None = None

    def config(self) -> ConvertConfig:
        """The config part, validated (one-line :class:`UserError` naming the key)."""
        return validate_config(ConvertConfig, {k: getattr(self, k) for k in ConvertConfig.model_fields})

    @classmethod
    def from_config(cls, config: ConvertConfig, **runtime: Any) -> ConvertOptions:
        """Options for ``config`` and the runtime ones (``inputs``, ``output``, ``workers``...)."""
        return cls(**config.model_dump(), **runtime)


@dataclass
class ConvertResult:
    output: Path
    stats: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    already_complete: bool = False

    @property
    def fill_rate(self) -> float:
        s = self.stats
        return s.get("tokens", 0) / max(1, s.get("samples", 0) * s.get("max_seq_len", 1))


def validate(opts: ConvertOptions) -> None:
    """The config fields through :class:`ConvertConfig`; the runtime options here."""
    opts.config()
    if opts.on_error not in ("fail", "skip"):
        raise UserError(f"--on-error: must be one of 'fail' or 'skip', got {opts.on_error!r}")
    if opts.workers < 0:
        raise UserError(f"--workers: must be 0 (in-process) or more, got {opts.workers}")


@dataclass
class _Batch:
    texts: list[str]
    at: list[Any]  # ResumePoint of each document


def _iter_batches(sources: list[Path], resume: Any, opts: ConvertOptions, rejects: RejectLog) -> Iterator[_Batch]:
    """Read documents from ``resume`` on, applying the --on-error policy, in batches of ~batch_chars."""
    from ipt_engine.data.packing import ResumePoint
    from ipt_engine.data.split import is_heldout

    texts: list[str] = []
    ats: list[ResumePoint] = []
    chars = 0
    segments = opts.segments
    for src_i in range(resume.source, len(sources)):
        start = resume.start if src_i == resume.source else 0
        stop = seek = None
        inner = False  # a segment after a file's first: errors about the whole file belong to the first
        if segments:
            seg = segments[src_i]
            start, stop, seek, inner = max(start, seg.start), seg.stop, seg.seek, seg.start > 0
        for rec in read_records(sources[src_i], text_field=opts.text_field, start=start, stop=stop, seek=seek):
            if inner and rec.index == 0:
                continue
            error = rec.error
            text = rec.text or ""  # None only with an error
            if error is None and not text.strip():
                error = "empty text"
            if error is not None:
                if opts.on_error == "fail":
                    raise UserError(f"{rec.location}: {error}")
                rejects.add(rec.source, rec.index, error)
                continue
            if opts.select is not None and is_heldout(text, opts.select[0]) != opts.select[1]:
                continue  # on the other side of the split
            ats.append(ResumePoint(src_i, rec.index - 1, 0, 0, rejects.size))
            texts.append(text)
            chars += len(text)
            if chars >= opts.batch_chars or len(texts) >= 8192:
                yield _Batch(texts, ats)
                texts, ats, chars = [], [], 0
    if texts:
        yield _Batch(texts, ats)


def _tokenized(batches: Iterator[_Batch], tok_json: str, bos: int | None, eos: int,
               workers: int) -> Iterator[tuple[_Batch, NDArray[np.int32], NDArray[np.int64]]]:
    """Yield (batch, flat tokens, lengths) in order; ``workers`` processes keep 2 batches each in flight."""
    from ipt_engine.data import tokenize

    if workers == 0:
        tokenize.init_worker(tok_json, bos, eos)
        for b in batches:
            yield (b, *tokenize.encode_batch(b.texts))
        return
    import multiprocessing as mp

    # spawn, not fork: the parent's tokenizer may already run Rust threads, which fork would orphan.
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=tokenize.init_worker, initargs=(tok_json, bos, eos)) as pool:
        inflight: collections.deque[tuple[_Batch, Any]] = collections.deque()
        for b in batches:
            inflight.append((b, pool.apply_async(tokenize.encode_batch, (b.texts,))))
            if len(inflight) >= 2 * workers:
                first, res = inflight.popleft()
                yield (first, *res.get())
        while inflight:
            first, res = inflight.popleft()
            yield (first, *res.get())


def _tokenizer_setup(name: str) -> tuple[Any, dict[str, Any], int | None, int]:
    from ipt_engine.data.tokenizer_info import load_tokenizer, tokenizer_fingerprint

    # The Rust tokenizer alone: transformers (and the torch it imports) would cost more start-up than a
    # small corpus takes to convert, and conversion needs only the backend and the special-token ids.
    tok = load_tokenizer(name, backend_only=True)
    fp = tokenizer_fingerprint(tok, name)
    eos = tok.eos_token_id
    if eos is None:
        raise UserError(f"tokenizer {name!r} has no EOS token; documents could not be separated")
    bos = tok.bos_token_id
    # BOS only where the tokenizer's own convention adds one (Llama/Mistral yes, GPT-2 style no).
    if bos is not None:
        probe = tok.encode_ids("a")
        if not probe or probe[0] != bos:
            bos = None
    return tok, fp, bos, eos


def convert(opts: ConvertOptions) -> ConvertResult:
    from tqdm import tqdm

    from ipt_engine.data.mds_writer import ResumableMDSWriter
    from ipt_engine.data.packing import BFDPacker, ConcatPacker, Doc, ResumePoint
    from ipt_engine.data.tokenize import backend_json

    validate(opts)
    sources = [Path(s.path) for s in opts.segments] if opts.segments else expand_inputs(opts.inputs)
    tok, fingerprint, bos, eos = _tokenizer_setup(opts.tokenizer)
    params = output_params(opts, fingerprint, bos)
    if opts.segments:
        params["segments"] = [s.to_json() for s in opts.segments]
    out = Path(opts.output)
    manifest = prepare_output(out, "convert", sources, params, resume=opts.resume, overwrite=opts.overwrite)
    result = ConvertResult(output=out)
    if manifest.get("complete"):
        result.already_complete, result.stats = True, manifest["stats"]
        return result

    ckpt = manifest.get("checkpoint") or {"shards": [], "resume": ResumePoint(0, 0).to_json(), "stats": {}}
    shards = ckpt["shards"]
    keep = {s["zip_data"]["basename"] if s.get("zip_data") else s["raw_data"]["basename"] for s in shards}
    for stale in list(out.glob("shard.*")) + list(out.glob("index.json")):
        if stale.name not in keep:
            stale.unlink()
    resume = ResumePoint.from_json(ckpt["resume"]) if ckpt["resume"] is not None else None
    rejects = RejectLog(out, keep_bytes=resume.rejects_bytes if resume else _size(out / "rejects.jsonl"))

    def on_shard(all_shards: list[dict[str, Any]], next_resume: Any, flushed: dict[str, int]) -> None:
        rejects.sync()
        manifest["checkpoint"] = {
            "shards": all_shards,
            "resume": next_resume.to_json() if next_resume is not None else None,
            "stats": flushed,
        }
        manifest["outputs"] = [s["zip_data"]["basename"] if s.get("zip_data") else s["raw_data"]["basename"] for s in all_shards]
        save_manifest(out, manifest)
        if opts.shard_hook is not None:
            opts.shard_hook(len(all_shards))

    N = opts.max_seq_len
    writer = ResumableMDSWriter(
        out=out, columns=COLUMNS, compression=opts.compression or None, size_limit=opts.shard_size,
        on_shard=on_shard, resume_shards=shards, resume_stats=ckpt["stats"],
    )
    totals = [t for t in (count_records(s) for s in sources) if t is not None]
    bar = tqdm(
        total=sum(totals) if len(totals) == len(sources) else None, unit="doc", desc="convert",
        disable=not opts.progress, dynamic_ncols=True,
    )
    t0 = time.perf_counter()
    new_tokens = 0
    try:
        if resume is not None:
            packer: ConcatPacker | BFDPacker
            if opts.packing == "concat":
                packer = ConcatPacker(N, first_offset=resume.offset)
            else:
                packer = BFDPacker(N, window_tokens=N * opts.bfd_window)
            to_skip = resume.skip

            def emit(samples: Iterator[Any]) -> None:
                nonlocal to_skip
                for s in samples:
                    if to_skip:
                        to_skip -= 1
                        continue
                    writer.write_sample(
                        {"tokens": s.tokens, "doc_lens": np.asarray(s.doc_lens, dtype=np.int32)},
                        s.resume,
                        {"samples": 1, "tokens": len(s.tokens), "documents": s.doc_starts,
                         "pieces": len(s.doc_lens), "full_samples": int(len(s.tokens) == N)},
                    )

            batches = _iter_batches(sources, resume, opts, rejects)
            for batch, flat, lens in _tokenized(batches, backend_json(tok), bos, eos, opts.workers):
                ends = np.cumsum(lens)
                begins = ends - lens
                for at, b, e in zip(batch.at, begins, ends):
                    emit(packer.add(Doc(flat[b:e], at)))
                new_tokens += int(ends[-1]) if len(ends) else 0
                bar.update(len(batch.texts))
                bar.set_postfix_str(f"{new_tokens / max(1e-9, time.perf_counter() - t0) / 1e3:.0f}k tok/s", refresh=False)
            emit(packer.finish())
        writer.close()
    except BaseException:
        writer.abandon()
        raise
    finally:
        bar.close()
        rejects.close()
    stats = dict(writer.flushed)
    stats["max_seq_len"] = N
    stats["rejects"] = _count_lines(out / "rejects.jsonl")
    result.stats = stats
    result.seconds = time.perf_counter() - t0
    stats["tokenized_tokens_this_run"] = new_tokens
    write_ipt_json(out, opts, fingerprint, bos, manifest["inputs"], stats)
    manifest["stats"] = stats
    manifest["complete"] = True
    save_manifest(out, manifest)
    return result


def output_params(opts: ConvertOptions, fingerprint: dict[str, Any], bos: int | None) -> dict[str, Any]:
    """What an output depends on besides its inputs; ``--resume`` refuses a change in any of it."""
    split = {} if opts.select is None else {"split": {"fraction": opts.select[0], "held_out": opts.select[1]}}
    return {**split,
        "tokenizer": fingerprint,
        "max_seq_len": opts.max_seq_len,
        "packing": opts.packing,
        "compression": opts.compression or None,
        "text_field": opts.text_field,
        "shard_size": opts.shard_size,
        "bfd_window": opts.bfd_window if opts.packing == "bfd" else None,
        "add_bos": bos is not None,
        "add_eos": True,
    }


def write_ipt_json(out: Path, opts: ConvertOptions, fingerprint: dict[str, Any], bos: int | None,
                   inputs: list[dict[str, Any]], stats: dict[str, int], **extra: Any) -> None:
    """``ipt.json``: what training checks (tokenizer, N) and reports (stats) about a shard directory."""
    atomic_write_json(out / IPT_JSON, {
        "format": "ipt-mds",
        "version": FORMAT_VERSION,
        "tokenizer": fingerprint,
        "max_seq_len": opts.max_seq_len,
        "packing": opts.packing,
        "add_bos": bos is not None,
        "add_eos": True,
        "columns": COLUMNS,
        "inputs": inputs,
        "stats": {k: v for k, v in stats.items() if k != "tokenized_tokens_this_run"},
        **({} if opts.select is None else {"split": {"fraction": opts.select[0], "held_out": opts.select[1]}}),
        **extra,
    })


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def read_ipt_json(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / IPT_JSON
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data
    except FileNotFoundError:
        raise UserError(f"{path}: missing; {directory} was not written by `ipt convert`") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: malformed JSON ({e.msg})") from None
