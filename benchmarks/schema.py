"""The one format every suite's results file follows, and its validator.

A results file is ``{"suite", "timestamp", "commit", "env": {...}, "cases": [...]}`` plus whatever a
suite adds beside (notes, predictions, plots). A case is one measure: ``name``, ``params``, ``unit``,
``baseline`` (null where no baseline is installable), ``ours``, ``ratio`` (> 1 means ours is better;
null without a baseline), ``higher_is_better``, ``repeats`` (measurements behind each median) and
``spread`` (min–max of those repeats per side, in ``unit``; null where a suite measured one aggregate).
Extra keys are allowed everywhere, so a suite keeps its details; what the summary table reads is
required and checked, including that ``ratio`` agrees with ``baseline`` and ``ours``.

    python -m benchmarks.schema [FILE ...]   # validate files (default: every committed results file)
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

RESULTS = Path(__file__).resolve().parent / "results"
RATIO_RTOL = 1e-6
# Records in results/ that are not baseline-vs-ours measurements (kernels-aot: registers, spills and
# shared memory per kernel x config x target, tabulated in docs/kernels.md instead).
OTHER_RECORDS = ("kernels-aot-",)


def results_files(directory: Path) -> list[Path]:
    """The baseline-vs-ours results files of ``directory``, sorted."""
    return sorted(f for f in Path(directory).glob("*.json") if not f.name.startswith(OTHER_RECORDS))


class Env(BaseModel):
    model_config = ConfigDict(extra="allow")
    python: str
    torch: str | None
    triton: str | None
    vllm: str | None
    transformers: str | None
    cpu: str
    gpu: str | None


class Spread(BaseModel):
    model_config = ConfigDict(extra="forbid")
    baseline: tuple[float, float] | None
    ours: tuple[float, float] | None

    @field_validator("baseline", "ours")
    @classmethod
    def _ordered(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not (math.isfinite(v[0]) and math.isfinite(v[1]) and v[0] <= v[1]):
            raise ValueError(f"spread must be finite [min, max] with min <= max, got {list(v)}")
        return v


class Case(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    params: dict[str, Any]
    unit: str
    baseline: float | None
    ours: float
    ratio: float | None
    higher_is_better: bool = True
    repeats: int
    spread: Spread

    @model_validator(mode="after")
    def _consistent(self) -> Case:
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        if not self.name.strip() or not self.unit.strip():
            raise ValueError("name and unit must be non-empty")
        if self.baseline is None:
            if self.ratio is not None:
                raise ValueError("ratio without a baseline")
            return self
        if self.ratio is None:
            raise ValueError("a case with a baseline needs its ratio")
        if self.baseline <= 0 or self.ours <= 0:
            raise ValueError(f"baseline and ours must be positive, got {self.baseline}, {self.ours}")
        expected = self.ours / self.baseline if self.higher_is_better else self.baseline / self.ours
        if abs(self.ratio - expected) > RATIO_RTOL * expected:
            raise ValueError(f"ratio {self.ratio} disagrees with baseline/ours ({expected})")
        return self


class Results(BaseModel):
    model_config = ConfigDict(extra="allow")
    suite: str
    timestamp: str
    commit: str | None
    env: Env
    cases: list[Case]

    @field_validator("cases")
    @classmethod
    def _nonempty(cls, v: list[Case]) -> list[Case]:
        if not v:
            raise ValueError("a results file needs at least one case")
        return v


class SchemaError(ValueError):
    """A results document that does not follow :class:`Results`; the message names what and where."""


def validate(doc: dict[str, Any], source: str = "<results>") -> Results:
    """Parse ``doc`` as a results file; raise :class:`SchemaError` with one line per problem."""
    try:
        return Results.model_validate(doc)
    except ValidationError as e:
        lines = [f"{source}: {'.'.join(str(x) for x in err['loc']) or '<root>'}: {err['msg']}" for err in e.errors()]
        raise SchemaError("\n".join(lines)) from None


def validate_file(path: str | Path) -> Results:
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SchemaError(f"{path}: not JSON ({e.msg})") from None
    return validate(doc, str(path))


def main(argv: list[str] | None = None) -> int:
    files = [Path(a) for a in (argv if argv is not None else sys.argv[1:])] or results_files(RESULTS)
    bad = 0
    for f in files:
        try:
            r = validate_file(f)
            print(f"ok   {f.name}: {len(r.cases)} case(s)")
        except SchemaError as e:
            bad += 1
            print(f"FAIL {e}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
