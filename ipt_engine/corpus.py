"""The embedded default corpus: real text present on every machine with Python.

Each document is one standard-library module's documentation — its module docstring followed by the
docstrings of its public classes, functions and methods — read from the ``.py`` sources with ``ast``
(nothing is imported, so no module's import side effects run). It is real, varied English technical
prose with code fragments, of the kind continual pre-training corpora hold, and it is the same on
every machine with the same Python version; the project writes none of it.
"""

from __future__ import annotations

import ast
import json
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from ipt_engine.io.atomic import atomic_open

_SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__", "turtledemo", "ensurepip"}
MIN_CHARS = 200  # modules with less documentation than this are not useful documents


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _doc_of(tree: ast.Module, name: str) -> str:
    chunks: list[str] = []
    head = ast.get_docstring(tree)
    if head:
        chunks.append(f"Module {name}\n\n{head}")

    def walk(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if node.name.startswith("_"):
                    continue
                qual = f"{prefix}{node.name}"
                doc = ast.get_docstring(node)
                if doc:
                    kind = "class" if isinstance(node, ast.ClassDef) else "function"
                    chunks.append(f"{kind} {qual}\n\n{doc}")
                if isinstance(node, ast.ClassDef):
                    walk(node.body, qual + ".")

    walk(tree.body, f"{name}.")
    return "\n\n".join(chunks)


def iter_stdlib_documents(root: Path | None = None) -> Iterator[dict[str, str]]:
    """Yield ``{"id": module, "text": documentation}`` for each documented stdlib module, sorted by path."""
    root = root or stdlib_dir()
    files = sorted(
        p for p in root.rglob("*.py")
        if not any(part in _SKIP_DIRS or part.startswith(".") for part in p.relative_to(root).parts[:-1])
    )
    for path in files:
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError, OSError):
            continue  # a few stdlib files are deliberately invalid (grammar test data)
        name = _module_name(path, root)
        text = _doc_of(tree, name)
        if len(text) >= MIN_CHARS:
            yield {"id": name, "text": text}


def write_default_corpus(path: str | Path, *, limit: int | None = None) -> tuple[Path, int]:
    """Write the default corpus as JSONL (atomically); return (path, number of documents)."""
    path = Path(path)
    n = 0
    with atomic_open(path, "wb") as f:
        for doc in iter_stdlib_documents():
            if limit is not None and n >= limit:
                break
            f.write((json.dumps(doc, ensure_ascii=False) + "\n").encode("utf-8"))
            n += 1
    return path, n
