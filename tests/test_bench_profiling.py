"""benchmarks.profiling: the trace opens as Chrome JSON, the table's shares add up, groups partition it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from benchmarks.profiling import activities, group_times, write_profile  # noqa: E402

MM_CALLS = 12


def _profile_matmul_loop():
    from torch.profiler import profile

    a = torch.randn(128, 128)
    b = torch.randn(128, 128)
    with profile(activities=activities()) as prof:
        for _ in range(MM_CALLS):
            c = torch.mm(a, b)
            c = torch.relu(c + 1.0)
    return prof


def _md_rows(md: str, heading: str) -> list[list[str]]:
    """The table rows (cells) under the first heading containing ``heading``."""
    section = md[md.index(heading):]
    rows = []
    for line in section.splitlines()[1:]:
        if line.startswith("### "):
            break
        if line.startswith("| ") and not line.startswith("| #") and not line.startswith("| group"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_write_profile_trace_table_and_groups(tmp_path: Path) -> None:
    prof = _profile_matmul_loop()
    groups = {"matmul": ["aten::mm", "addmm"], "elementwise": ["relu", "aten::add"]}
    out = write_profile(prof, tmp_path / "p", "mm-loop", groups=groups, steps=MM_CALLS)

    trace = json.loads(Path(out["trace"]).read_text())
    events = trace["traceEvents"]
    mm_events = [e for e in events if e.get("name") == "aten::mm" and e.get("ph") == "X"]
    assert len(mm_events) == MM_CALLS  # what the loop called, counted in the trace itself

    md = Path(out["table"]).read_text()
    assert out["side"] == ("device" if torch.cuda.is_available() else "cpu")
    rows = _md_rows(md, "Top 15")
    assert 1 <= len(rows) <= 15
    ops = {r[1].strip("`"): r for r in rows}
    if out["side"] == "cpu":
        assert "aten::mm" in ops and int(ops["aten::mm"][2]) == MM_CALLS
    pcts = [float(r[-1]) for r in rows]
    assert all(p >= 0 for p in pcts) and sum(pcts) <= 100.0 + 0.05 * len(pcts)  # rounding to 0.1
    assert pcts == sorted(pcts, reverse=True)
    # the returned figures agree with the table
    assert [round(r["pct"], 1) for r in out["top"]] == pcts

    g = out["groups"]
    assert set(g) == {"matmul", "elementwise", "other"}
    assert sum(v["self_ms"] for v in g.values()) == pytest.approx(out["total_ms"], rel=1e-9)
    assert sum(v["pct"] for v in g.values()) == pytest.approx(100.0, abs=1e-6)
    if out["side"] == "cpu":
        assert g["matmul"]["self_ms"] >= next(r["self_ms"] for r in out["top"] if r["op"] == "aten::mm")
    group_rows = [line for line in md.splitlines() if re.match(r"^\| (matmul|elementwise|other) \|", line)]
    assert len(group_rows) == 3


def test_group_times_first_match_wins_and_partitions() -> None:
    ops = {"aten::mm": {"self_us": 10.0, "calls": 1}, "aten::addmm": {"self_us": 5.0, "calls": 2},
           "Optimizer.step#AdamW.step": {"self_us": 7.0, "calls": 1}, "aten::copy_": {"self_us": 3.0, "calls": 4}}
    g = group_times(ops, {"matmul": ["MM"], "optimizer": ["optimizer", "addmm"]})
    assert g["matmul"] == {"self_us": 15.0, "ops": 2}  # addmm matched matmul first, case-insensitively
    assert g["optimizer"] == {"self_us": 7.0, "ops": 1}
    assert g["other"] == {"self_us": 3.0, "ops": 1}


def test_empty_profile_is_refused(tmp_path: Path) -> None:
    from torch.profiler import profile, schedule

    # repeat=0 (the default) starts a new cycle after the active steps, which empties the profile
    with profile(activities=activities(), schedule=schedule(wait=0, warmup=1, active=1)) as prof:
        for _ in range(2):
            torch.mm(torch.ones(4, 4), torch.ones(4, 4))
            prof.step()
    with pytest.raises(ValueError, match="holds no events"):
        write_profile(prof, tmp_path, "empty")
