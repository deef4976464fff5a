"""One configuration system for every stage: YAML + dotted overrides -> a pydantic model, one-line errors.

Each stage describes its settings as a tree of :class:`Section` models (``TrainConfig``, ``SynthConfig``,
``ConvertConfig``); the field docstrings are the documentation (``ipt <stage> --schema`` prints them).
:func:`load` is the only way a stage turns user input into a config: a YAML file, then values from
command-line flags, then ``key=value`` overrides with dotted keys, all validated by pydantic in one go.
A mistake becomes one line naming where the value came from, its dotted key, the rule and the value::

    tiny-cpu.yaml: optimizer.lr: must be > 0, got -1
    command line: max_duration: must be a Composer time such as 100ba, 1ep, 5000sp or 1000000tok, got '4 steps'
    --max-seq-len: must be >= 2, got 1

raised as :class:`~ipt_engine.errors.UserError` (the CLI prints it and exits 2, without a traceback).
Cross-field rules raise :class:`Invalid`, which may name the field it blames below the section that
checks it. PyYAML and pydantic are imported here, never by ``ipt_engine.cli``, so ``ipt --help`` stays
instant.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from ipt_engine.errors import UserError

M = TypeVar("M", bound=BaseModel)

COMMAND_LINE = "command line"
"""Where a value given as a ``key=value`` override came from, in error messages."""


class Section(BaseModel):
    """A config section: unknown keys are errors and each field's docstring is its description.

    Numbers are accepted where a string is expected (``run_name: 7``, ``tokenizer.name: 2``), and the
    usual lax conversions apply (``"8"`` for an integer; PyYAML reads ``1e-4`` as a string, a float
    field takes it as the number it means).
    """

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, use_attribute_docstrings=True)


class Invalid(ValueError):
    """A rule broken in a validator. ``message`` is all that follows the dotted key in the error line;
    ``at`` extends the key below the section that runs the check (a cross-field rule in ``LoaderConfig``
    blames ``streams.raw.proportion``)."""

    def __init__(self, message: str, *at: str | int) -> None:
        super().__init__(message)
        self.message = message
        self.at = at


# --------------------------------------------------------------------------------------------------
# Reading: YAML, overrides, flags
# --------------------------------------------------------------------------------------------------


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``; a missing file or a non-mapping document is a user error."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{p}{at}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{p}: must be a mapping of config keys at the top level, got {type(data).__name__}")
    return data


def parse_override(item: str) -> tuple[str, Any]:
    """``a.b.c=value`` -> (``a.b.c``, value parsed as YAML: ``null``, numbers, booleans, ``[1, 2]``)."""
    import yaml

    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise UserError(f"override {item!r}: expected KEY=VALUE with a dotted KEY, e.g. section.key=10")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw  # not YAML: the literal string the user typed
    return key, value


def set_dotted(data: dict[str, Any], key: str, value: Any, *, what: str | None = None) -> None:
    """Set ``data[a][b][c] = value`` for ``key`` ``a.b.c``, creating sections as needed.

    Whether the key exists is left to validation, so the error names the full dotted key.
    """
    node = data
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise UserError(f"{what or key}: {'.'.join(parts[: i + 1])} is a value, not a section")
        node = child
    node[parts[-1]] = value


def load(
    model: type[M],
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    *,
    flags: Mapping[str, tuple[str, Any]] | None = None,
    data: Mapping[str, Any] | None = None,
) -> M:
    """Build ``model`` from a YAML file (or ``data``), command-line ``flags`` and ``key=value`` overrides.

    ``flags`` maps a dotted key to ``(flag name, value)`` for the options a stage also offers as flags
    (``--max-seq-len``); their errors name the flag. Later sources win: file, flags, overrides.
    """
    raw: dict[str, Any] = read_yaml(path) if path is not None else {}
    if data is not None:
        raw = json.loads(json.dumps(data))  # a deep copy the overrides may change
    origins: dict[str, str] = {}
    for key, (flag, value) in (flags or {}).items():
        set_dotted(raw, key, value, what=flag)
        origins[key] = flag
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(raw, key, value, what=f"override {item!r}")
        origins[key] = COMMAND_LINE
    return validate(model, raw, source=None if path is None else str(path), origins=origins)


def validate(
    model: type[M], data: Any, *, source: str | None = None, origins: Mapping[str, str] | None = None
) -> M:
    """``model.model_validate(data)`` with a validation error turned into one :class:`UserError` line."""
    try:
        return model.model_validate({} if data is None else data)
    except ValidationError as e:
        raise UserError(format_error(e, model, source=source, origins=origins)) from None


# --------------------------------------------------------------------------------------------------
# Errors: pydantic's ValidationError -> one line
# --------------------------------------------------------------------------------------------------


def format_error(
    err: ValidationError, model: type[BaseModel], *, source: str | None = None,
    origins: Mapping[str, str] | None = None,
) -> str:
    """The first problem as ``SOURCE: dotted.key: must ..., got VALUE`` (and how many more there are).

    Alternatives of a union (``int | 'auto'``) fail together and are reported together.
    """
    groups: dict[str, list[tuple[list[str | int], ErrorDetails]]] = {}
    for e in err.errors(include_url=False):
        path = _path(model, e)
        groups.setdefault(_render(path), []).append((path, e))
    # A union alternative of the wrong kind (``str`` for a mapping) says less than the alternative the
    # value was meant for, which failed deeper: report that one.
    for k in [k for k, errs in groups.items() if all(e["type"].endswith("_type") for _, e in errs)]:
        if any(o.startswith(k + ".") or o.startswith(k + "[") for o in groups) and len(groups) > 1:
            del groups[k]
    key, first = next(iter(groups.items()))
    message = _message(model, first)
    more = len(groups) - 1
    suffix = f" (and {more} more {'error' if more == 1 else 'errors'})" if more else ""
    origin = _origin(key, origins or {})
    if origin is not None and origin.startswith("-"):
        return f"{origin}: {message}{suffix}"  # the user typed the flag, not the dotted key
    where = origin or source
    head = ": ".join(x for x in (where, key) if x)
    return f"{head}: {message}{suffix}" if head else f"{message}{suffix}"


def _origin(key: str, origins: Mapping[str, str]) -> str | None:
    """Where the value at ``key`` came from: the flag or override that set it or a section above it,
    else one that set a key below it (a cross-field rule blames the section)."""
    above = [k for k in origins if key == k or key.startswith(k + ".") or key.startswith(k + "[")]
    if above:
        return origins[max(above, key=len)]
    below = [k for k in origins if key and k.startswith(key + ".")]
    return origins[below[-1]] if below else None


def _render(path: list[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _walk(model: type[BaseModel], loc: tuple[str | int, ...]) -> tuple[list[str | int], Any]:
    """Follow pydantic's ``loc`` through the schema: the dotted key without the tags pydantic adds for
    union alternatives, and the annotation found there."""
    path: list[str | int] = []
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        members = _union_members(tp)
        if len(members) > 1:  # ``part`` names the alternative that failed, not a key
            tp = next((m for m in members if _tag_matches(m, part)), Any)
            continue
        path.append(part)
        tp = _child(tp, part)
    return path, _unwrap(tp)


def _path(model: type[BaseModel], e: ErrorDetails) -> list[str | int]:
    """The dotted key of an error, extended by what an :class:`Invalid` names below its section."""
    path, _ = _walk(model, tuple(e["loc"]))
    error = e.get("ctx", {}).get("error")
    if isinstance(error, Invalid):
        path.extend(error.at)
    return path


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated`` and a ``None`` alternative: pydantic's ``loc`` has no step for either."""
    while True:
        if typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
            continue
        members = _union_members(tp)
        if len(members) == 1 and members[0] is not tp:
            tp = members[0]
            continue
        return tp


def _union_members(tp: Any) -> list[Any]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return [a for a in typing.get_args(tp) if a is not type(None)]
    return [tp]


def _tag_matches(member: Any, tag: Any) -> bool:
    member = _unwrap(member)
    if typing.get_origin(member) is Literal:
        return str(tag).startswith("literal[")
    return str(tag) == getattr(member, "__name__", None)


def _child(tp: Any, part: Any) -> Any:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = tp.model_fields.get(part) if isinstance(part, str) else None
        return field.annotation if field is not None else Any
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (dict, Mapping) and len(args) == 2:
        return args[1]
    if origin in (list, tuple) and args:
        return args[0]
    return Any


def show(value: Any) -> str:
    """A value as the user wrote it in YAML: strings quoted, ``null``, ``true``/``false``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return repr(value)
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_KIND = {
    "int": "an integer", "float": "a number", "bool": "true or false", "string": "a string",
    "dict": "a mapping", "model": "a mapping", "model_attributes": "a mapping", "list": "a list",
    "tuple": "a list",
}


def _requirement(model: type[BaseModel], e: ErrorDetails) -> str | None:
    """What the rule asks for (``must be > 0``), or None when the message is complete on its own."""
    kind, ctx = e["type"], e.get("ctx", {})
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        bound = next(iter(v for k, v in ctx.items() if k in ("gt", "ge", "lt", "le")))
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)  # ``Field(gt=0)`` on a float field: "> 0", as the user would write it
        return f"must be {bounds[kind]} {bound}"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}"
    for prefix, name in _KIND.items():
        if kind in (f"{prefix}_type", f"{prefix}_parsing", f"{prefix}_from_float"):
            return f"must be {name}" if kind != "int_from_float" else "must be a whole number"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx['pattern']}"
    if kind == "too_short":
        return f"must have at least {ctx['min_length']} item(s)"
    if kind == "too_long":
        return f"must have at most {ctx['max_length']} item(s)"
    return None


def _message(model: type[BaseModel], group: list[tuple[list[str | int], ErrorDetails]]) -> str:
    _, e = group[0]
    error = e.get("ctx", {}).get("error")
    if isinstance(error, Invalid):
        return error.message
    if e["type"] == "missing":
        return "missing required key"
    if e["type"] == "extra_forbidden":
        _, parent = _walk(model, tuple(e["loc"][:-1]))
        known = sorted(parent.model_fields) if isinstance(parent, type) and issubclass(parent, BaseModel) else []
        return "unknown key" + (f" (known keys here: {', '.join(known)})" if known else "")
    needs = [r for r in (_requirement(model, x) for _, x in group) if r is not None]
    got = show(e["input"])
    if needs:
        alternatives = [needs[0]] + [n.removeprefix("must be ").removeprefix("one of ") for n in needs[1:]]
        return f"{' or '.join(dict.fromkeys(alternatives))}, got {got}"
    if error is not None:  # a plain ValueError from a validator
        return f"{error}, got {got}"
    msg = e["msg"]
    return f"{msg[:1].lower()}{msg[1:]}, got {got}"


# --------------------------------------------------------------------------------------------------
# Printing: --print-config and --schema
# --------------------------------------------------------------------------------------------------


def dump_yaml(cfg: BaseModel) -> str:
    """The resolved config as YAML, in field order: what ``--print-config`` shows, loadable again."""
    import yaml

    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, default_flow_style=False)


def type_name(tp: Any) -> str:
    """An annotation in the words of a YAML file (``an integer``, ``'packed' | 'flex'``, ``a mapping``)."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return type_name(typing.get_args(tp)[0])
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "section"
    if origin in (dict, Mapping):
        args = typing.get_args(tp)
        inner = _unwrap(args[1]) if len(args) == 2 else Any
        return "mapping of name -> section" if isinstance(inner, type) and issubclass(inner, BaseModel) else "mapping"
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"list of {type_name(args[0])}" if args else "list"
    return {int: "integer", float: "number", str: "string", bool: "true | false"}.get(tp, getattr(tp, "__name__", str(tp)))


def schema_lines(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every field of ``model`` as ``dotted.key: type = default`` with its description indented below."""
    from pydantic_core import PydanticUndefined

    lines: list[str] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        tp = field.annotation
        if field.default is not PydanticUndefined:
            default = f" = {show(field.default)}"
        elif field.default_factory is not None:
            value = field.default_factory()  # type: ignore[call-arg]
            default = "" if isinstance(value, BaseModel) else f" = {show(value)}"
        else:
            default = " (required)"
        lines.append(f"{key}: {type_name(tp)}{default}")
        if field.description:
            lines.extend(f"    {line.strip()}" for line in field.description.strip().splitlines())
        inner = _unwrap(tp)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            lines.extend(schema_lines(inner, f"{key}."))
        elif typing.get_origin(inner) in (dict, Mapping):
            args = typing.get_args(inner)
            value_tp = _unwrap(args[1]) if len(args) == 2 else Any
            if isinstance(value_tp, type) and issubclass(value_tp, BaseModel):
                lines.extend(schema_lines(value_tp, f"{key}.<name>."))
    return lines


def schema_text(model: type[BaseModel]) -> str:
    """``--schema``: the model's own description, then every field."""
    import inspect

    head = inspect.cleandoc(model.__doc__ or "")
    return "\n".join([head, "", *schema_lines(model)] if head else schema_lines(model)) + "\n"


def resolve_model(spec: str) -> type[BaseModel]:
    """``"package.module:ClassName"`` -> the class (commands name their model as a string to stay light)."""
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)
