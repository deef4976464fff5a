"""Streaming readers for every input kind a stage accepts.

Each reader yields :class:`Record` objects one at a time, so memory stays constant whatever the input
size: JSONL is read line by line through a streaming decompressor, Parquet and Arrow by record batch.
A record that cannot be used is not raised but yielded with ``error`` set, so the caller decides between
failing (one clear line) and skipping (counted, written to ``rejects.jsonl``) — the ``--on-error``
policy lives in one place, not in every reader.

``start`` skips the first records of a source without parsing them; resumed stages use it to jump to
where they stopped. ``stop`` ends a source after that record, and ``seek`` (plain JSONL only) jumps to
a byte offset known to begin a line, so a range of a large file is read without reading what is before
it (distributed conversion splits large files into such ranges). Record indices are 1-based line numbers (JSONL) or row numbers (Parquet, Arrow), so
error messages point at what a user sees in an editor.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from ipt_engine.io.discover import is_hf_dataset_dir

Mode = Literal["text", "json"]
_BATCH_ROWS = 1024


@dataclass(slots=True)
class Record:
    """One input record. ``index`` 0 means the whole source (e.g. an empty file)."""

    source: str
    index: int
    text: str | None = None
    value: Any = None
    error: str | None = None

    @property
    def location(self) -> str:
        return f"{self.source}:{self.index}" if self.index else self.source


def _open_binary(path: Path) -> io.BufferedIOBase:
    name = path.name
    if name.endswith(".gz"):
        return cast(io.BufferedIOBase, gzip.open(path, "rb"))
    if name.endswith(".zst"):
        import zstandard

        raw = open(path, "rb")  # noqa: SIM115 - owned by the returned reader
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=True)
        return io.BufferedReader(cast(io.RawIOBase, reader), buffer_size=1 << 20)
    return cast(io.BufferedIOBase, open(path, "rb", buffering=1 << 20))  # noqa: SIM115


def _text_from(value: Any, text_field: str) -> tuple[str | None, str | None]:
    """Return (text, error) for one parsed record."""
    if not isinstance(value, dict):
        return None, f"expected a JSON object, got {type(value).__name__}"
    if text_field not in value:
        return None, f"missing text field {text_field!r}"
    text = value[text_field]
    if not isinstance(text, str):
        return None, f"text field {text_field!r} is {type(text).__name__}, not a string"
    return text, None


def _read_jsonl(path: Path, text_field: str, mode: Mode, start: int,
                seek: tuple[int, int] | None = None, stop: int | None = None) -> Iterator[Record]:
    src = str(path)
    seen_any = False
    try:
        f = _open_binary(path)
    except OSError as e:
        yield Record(src, 0, error=f"cannot open: {e.strerror or e}")
        return
    first = 1
    if seek is not None:  # (byte offset, lines before it): the offset begins line lines + 1
        f.seek(seek[0])
        first = seek[1] + 1
    with f:
        try:
            for line_no, raw in enumerate(f, start=first):
                seen_any = True
                if stop is not None and line_no > stop:
                    break
                if line_no <= start:
                    continue
                if not raw.strip():
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield Record(src, line_no, error=f"invalid UTF-8 at byte {e.start}")
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as e:
                    yield Record(src, line_no, error=f"malformed JSON: {e.msg} (column {e.colno})")
                    continue
                if mode == "json":
                    yield Record(src, line_no, value=value)
                    continue
                text, err = _text_from(value, text_field)
                yield Record(src, line_no, text=text, value=value, error=err)
        except (OSError, EOFError, ValueError) as e:
            # Truncated gzip/zstd streams surface here, not at open time.
            yield Record(src, 0, error=f"corrupt compressed stream: {e}")
            return
    if not seen_any and start == 0 and first == 1:
        yield Record(src, 0, error="empty file")


def _read_txt(path: Path, mode: Mode, start: int) -> Iterator[Record]:
    src = str(path)
    if start >= 1:
        return
    try:
        data = path.read_bytes()
    except OSError as e:
        yield Record(src, 0, error=f"cannot read: {e.strerror or e}")
        return
    if not data.strip():
        yield Record(src, 0, error="empty file")
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        yield Record(src, 1, error=f"invalid UTF-8 at byte {e.start}")
        return
    yield Record(src, 1, text=text, value={"text": text})


def _rows_from_batches(
    src: str, batches: Iterator[Any], text_field: str, mode: Mode, start: int, row: int = 0
) -> Iterator[Record]:
    """Records from Arrow batches; ``row`` is how many rows precede the first batch."""
    first_row = row
    for batch in batches:
        n = batch.num_rows
        if row + n <= start:
            row += n
            continue
        if mode == "json":
            for i, value in enumerate(batch.to_pylist()):
                if row + i + 1 > start:
                    yield Record(src, row + i + 1, value=value)
        else:
            names = batch.schema.names
            if text_field not in names:
                yield Record(src, 0, error=f"missing text column {text_field!r} (columns: {', '.join(names)})")
                return
            for i, text in enumerate(batch.column(names.index(text_field)).to_pylist()):
                idx = row + i + 1
                if idx <= start:
                    continue
                if not isinstance(text, str):
                    kind = "null" if text is None else type(text).__name__
                    yield Record(src, idx, error=f"text field {text_field!r} is {kind}, not a string")
                else:
                    yield Record(src, idx, text=text)
        row += n
    if row == 0 and first_row == 0:
        yield Record(src, 0, error="empty file")


def _read_parquet(path: Path, text_field: str, mode: Mode, start: int) -> Iterator[Record]:
    import pyarrow.parquet as pq

    src = str(path)
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a non-Parquet file
        yield Record(src, 0, error=f"not a readable Parquet file: {e}")
        return
    columns = None
    if mode == "text":
        if text_field not in pf.schema_arrow.names:
            yield Record(
                src, 0, error=f"missing text column {text_field!r} (columns: {', '.join(pf.schema_arrow.names)})"
            )
            return
        columns = [text_field]
    # Skip whole row groups before ``start`` without decoding them.
    groups: list[int] = []
    row = 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if groups or row + n > start:
            groups.append(g)
        else:
            row += n
    if not groups and pf.metadata.num_row_groups:
        return
    batches = pf.iter_batches(batch_size=_BATCH_ROWS, columns=columns, row_groups=groups or None)
    yield from _rows_from_batches(src, batches, text_field, mode, start, row)


def _arrow_files(path: Path) -> list[Path]:
    if (path / "dataset_dict.json").is_file():
        splits = json.loads((path / "dataset_dict.json").read_text())["splits"]
        return [f for s in splits for f in _arrow_files(path / s)]
    state = json.loads((path / "state.json").read_text())
    return [path / d["filename"] for d in state.get("_data_files", [])]


def _read_hf_dataset(path: Path, text_field: str, mode: Mode, start: int) -> Iterator[Record]:
    import pyarrow as pa

    src = str(path)
    try:
        files = _arrow_files(path)
    except (OSError, KeyError, ValueError) as e:
        yield Record(src, 0, error=f"not a readable save_to_disk directory: {e}")
        return

    def batches() -> Iterator[Any]:
        for f in files:
            with pa.memory_map(str(f)) as mm:
                yield from pa.ipc.open_stream(mm)

    yield from _rows_from_batches(src, batches(), text_field, mode, start)


def read_records(
    path: str | Path, *, text_field: str = "text", mode: Mode = "text", start: int = 0,
    stop: int | None = None, seek: tuple[int, int] | None = None,
) -> Iterator[Record]:
    """Yield the records of one source (see :func:`ipt_engine.io.expand_inputs`).

    ``mode="text"`` requires a string ``text_field`` in every record; ``mode="json"`` yields any JSON
    value (templify reads read collections, which are JSON lists). Records ``start + 1`` to ``stop``
    are yielded (errors about the whole source, index 0, always); ``seek=(byte, lines)`` starts a plain
    ``.jsonl`` file at a byte offset that begins line ``lines + 1``.
    """
    path = Path(path)
    if seek is not None and not (path.name.endswith(".jsonl") and path.is_file()):
        raise ValueError(f"{path}: only plain .jsonl files can be read from a byte offset")
    if is_hf_dataset_dir(path):
        records = _read_hf_dataset(path, text_field, mode, start)
    elif path.name.endswith(".parquet"):
        records = _read_parquet(path, text_field, mode, start)
    elif path.name.endswith(".txt"):
        records = _read_txt(path, mode, start)
    else:
        return _read_jsonl(path, text_field, mode, start, seek, stop)
    return records if stop is None else _until(records, stop)


def _until(records: Iterator[Record], stop: int) -> Iterator[Record]:
    for rec in records:
        if rec.index > stop:
            return
        yield rec


def count_records(path: str | Path) -> int | None:
    """A cheap record count for progress bars, or None when counting would cost a full read."""
    path = Path(path)
    name = path.name
    try:
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(path).metadata.num_rows)
        if name.endswith(".txt"):
            return 1
        if name.endswith(".jsonl"):
            n = 0
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    n += block.count(b"\n")
            return n
    except OSError:
        return None
    return None
