"""The ``manifest.json`` every stage keeps in its output directory.

It says what was read (paths and sizes), with which parameters, what has been written so far, and
``"complete": true`` once the stage has finished. It is rewritten atomically after every committed unit
of output, which is what makes ``--resume`` exact: whatever the manifest lists is on disk and whole;
whatever it does not list is redone. The fields: docs/ARCHITECTURE.md, "Manifest".
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from ipt_engine import __version__
from ipt_engine.errors import UserError
from ipt_engine.io.atomic import atomic_write_json, remove_stale_temporaries

MANIFEST = "manifest.json"


def describe_inputs(sources: list[Path]) -> list[dict[str, Any]]:
    out = []
    for p in sources:
        size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
        out.append({"path": str(p), "bytes": size})
    return out


def load_manifest(directory: str | Path) -> dict[str, Any] | None:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return manifest
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: unreadable manifest ({e}); remove the directory or pass --overwrite") from None


def save_manifest(directory: str | Path, manifest: dict[str, Any]) -> None:
    manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    atomic_write_json(Path(directory) / MANIFEST, manifest)


def new_manifest(stage: str, sources: list[Path], params: dict[str, Any]) -> dict[str, Any]:
    return {
        "stage": stage,
        "ipt_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "inputs": describe_inputs(sources),
        "params": params,
        "outputs": [],
        "stats": {},
        "checkpoint": None,
        "complete": False,
    }


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in keys if old.get(k) != new.get(k)]


def prepare_output(
    directory: str | Path,
    stage: str,
    sources: list[Path],
    params: dict[str, Any],
    *,
    resume: bool,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Create or reopen a stage's output directory and return its manifest.

    ``resume`` continues a partial output written with the same inputs and parameters, and starts fresh
    when there is none. Without it, an existing non-empty directory is refused unless ``overwrite``.
    """
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise UserError(f"{d}: output exists and is not a directory")
    existing = load_manifest(d) if d.is_dir() else None
    if overwrite and d.is_dir():
        shutil.rmtree(d)
        existing = None
    elif resume and existing is not None:
        if existing.get("stage") != stage:
            raise UserError(f"{d}: holds the output of stage {existing.get('stage')!r}, not {stage!r}")
        diffs = _differences(existing.get("params", {}), params)
        if diffs:
            raise UserError(f"{d}: cannot resume, parameters differ ({'; '.join(diffs)})")
        old_inputs = [(i["path"], i["bytes"]) for i in existing.get("inputs", [])]
        new_inputs = [(i["path"], i["bytes"]) for i in describe_inputs(sources)]
        if old_inputs != new_inputs:
            raise UserError(f"{d}: cannot resume, the inputs differ from the ones the partial output was made from")
        remove_stale_temporaries(d)
        return existing
    elif d.is_dir() and any(d.iterdir()):
        raise UserError(f"{d}: output directory is not empty; pass --resume to continue it or --overwrite to replace it")
    d.mkdir(parents=True, exist_ok=True)
    manifest = new_manifest(stage, sources, params)
    save_manifest(d, manifest)
    return manifest
