"""run_part_stage with a pluggable executor: a part the executor gives up on leaves a hole that --resume
fills by redoing that part only, adopting the parts written ahead of it."""

from __future__ import annotations

import functools
import json

from ipt_engine.io.parts import PartFailed, run_part_stage


def echo_part(calls: list[int], index: int, records):
    calls.append(index)
    return [{"text": r.text, "part": index} for r in records], {"records": len(records)}


class FlakyExecutor:
    """Runs parts inline but gives up on the ones in ``fail`` (as a cluster executor does when its
    retries are spent), two parts in flight."""

    capacity = 2

    def __init__(self, process, fail: set[int]) -> None:
        self.process, self.fail, self.closed = process, fail, False

    def submit(self, index, records):
        return index, records

    def result(self, handle):
        index, records = handle
        if index in self.fail:
            raise PartFailed(index, "worker died", 3)
        rows, stats = self.process(index, records)
        return rows, {**stats, "_part": {"worker": 7}}

    def close(self) -> None:
        self.closed = True


def _rows(out):
    import zstandard

    manifest = json.loads((out / "manifest.json").read_text())
    rows = []
    for part in manifest["outputs"]:
        data = zstandard.ZstdDecompressor().decompress((out / part["file"]).read_bytes(), max_output_size=1 << 24)
        rows += [json.loads(line) for line in data.decode().splitlines()]
    return rows


def _run(src, out, process, **kw):
    return run_part_stage(stage="t", sources=[src], output=out, params={"p": 1}, process=process,
                          part_size=2, **kw)


def test_failed_part_is_redone_alone_on_resume(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(9)))  # parts 0..4
    reference = tmp_path / "ref"
    _run(src, reference, functools.partial(echo_part, []), resume=False)

    calls: list[int] = []
    out = tmp_path / "out"
    flaky = FlakyExecutor(functools.partial(echo_part, calls), fail={1})
    first = _run(src, out, None, resume=False, executor=flaky)
    assert flaky.closed
    assert [f["index"] for f in first.failed] == [1] and first.failed[0]["attempts"] == 3
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["complete"]
    assert [p["file"] for p in manifest["outputs"]] == ["part-00000.jsonl.zst"]
    assert sorted(manifest["ahead"]) == ["2", "3", "4"]  # finished past the hole, kept on disk
    assert manifest["failed"][0]["error"] == "worker died"
    assert manifest["outputs"][0]["part"] == {"worker": 7}
    assert sorted(calls) == [0, 2, 3, 4]

    calls.clear()
    again = _run(src, out, functools.partial(echo_part, calls), resume=True)
    assert calls == [1]  # only the hole is run again
    assert not again.failed
    final = json.loads((out / "manifest.json").read_text())
    assert final["complete"] and "ahead" not in final and "failed" not in final
    assert [p["records"] for p in final["outputs"]] == [2, 2, 2, 2, 1]
    assert _rows(out) == _rows(reference)
    assert final["stats"]["records"] == 9  # adopted parts' stats are counted once


def test_adoption_needs_the_file(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(6)))
    out = tmp_path / "out"
    _run(src, out, None, resume=False, executor=FlakyExecutor(functools.partial(echo_part, []), fail={0}))
    (out / "part-00002.jsonl.zst").unlink()  # an ahead part lost: it is run again, not trusted
    calls: list[int] = []
    _run(src, out, functools.partial(echo_part, calls), resume=True)
    assert calls == [0, 2]
    assert [r["text"] for r in _rows(out)] == [f"t{i}" for i in range(6)]
