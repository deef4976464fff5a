"""Readers, writers and manifests shared by every stage."""

from ipt_engine.io.atomic import atomic_write_bytes, atomic_write_json, fsync_dir
from ipt_engine.io.discover import expand_inputs
from ipt_engine.io.readers import Record, count_records, read_records

__all__ = [
    "Record",
    "atomic_write_bytes",
    "atomic_write_json",
    "count_records",
    "expand_inputs",
    "fsync_dir",
    "read_records",
]
