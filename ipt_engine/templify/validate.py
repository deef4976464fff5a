"""Checking that a JSON value is a read collection, with a message a user can act on.

A read collection is a list of entries ``{"context": str, "QA_list": [{"Q": str, "A": str}, ...],
"inherit_from_prev": bool, ...}`` (the released corpora's format; other keys are ignored). The check is
strict about what templify reads and silent about everything else, so files with extra metadata pass.
"""

from __future__ import annotations

from typing import Any


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def collection_error(value: Any) -> str | None:
    """None if ``value`` is a valid read collection, else a one-line description of the first problem."""
    if not isinstance(value, list):
        return f"expected a read collection (a JSON list of entries), got {_type(value)}"
    for i, entry in enumerate(value):
        where = f"entry {i}"
        if not isinstance(entry, dict):
            return f"{where} is {_type(entry)}, not an object"
        if not isinstance(entry.get("context"), str):
            return f"{where} has no string 'context'" if "context" not in entry else (
                f"{where}: 'context' is {_type(entry['context'])}, not a string")
        qa_list = entry.get("QA_list")
        if not isinstance(qa_list, list):
            return f"{where} has no 'QA_list'" if "QA_list" not in entry else (
                f"{where}: 'QA_list' is {_type(qa_list)}, not a list")
        for j, qa in enumerate(qa_list):
            if not isinstance(qa, dict):
                return f"{where}: QA_list[{j}] is {_type(qa)}, not an object"
            for key in ("Q", "A"):
                if not isinstance(qa.get(key), str):
                    return f"{where}: QA_list[{j}] has no string {key!r}"
        inherit = entry.get("inherit_from_prev", False)
        if not isinstance(inherit, bool):
            return f"{where}: 'inherit_from_prev' is {_type(inherit)}, not true/false"
    return None
