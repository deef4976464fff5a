"""The closing table of ``ipt pipeline`` and the generic table formatter under it."""

from __future__ import annotations

import json

import pytest

from ipt_engine.pipeline_report import Count, PipelineReport, Row, manifest_counts
from ipt_engine.summary import format_table


def test_format_table_aligns_columns_by_hand():
    text = format_table(["name", "n", "where"], [["a", "7", "x"], ["long name", "1,234", ""]], align="<><")
    assert text == (
        "name           n  where\n"
        "---------  -----  -----\n"
        "a              7  x\n"
        "long name  1,234"
    )


def test_format_table_refuses_ragged_rows():
    with pytest.raises(ValueError):
        format_table(["a", "b"], [["only one"]])
    with pytest.raises(ValueError):
        format_table(["a", "b"], [["1", "2"]], align="<")


def test_pipeline_table_by_hand():
    report = PipelineReport("ipt pipeline out/demo", rows=[
        Row("corpus", "out/demo/corpus/raw.jsonl", None, Count(1234, "docs"), 0.84, reused=True),
        Row("convert raw", "out/demo/shards/raw", Count(1234, "docs"), Count(512, "samples"), 12.345),
        Row("synthesize", "out/demo/synth", Count(32, "texts"), Count(16, "collections"), 95.0),
        Row("train", "out/demo/train", Count(2, "streams"), Count(12, "batches"), 40.25),
        Row("plot raw", "out/demo/raw-doc-lengths.png", seconds=0.3),
    ])
    # Worked out by hand: the "in" counts right-aligned to the widest ("1,234 docs", 10 characters) so
    # the arrows line up; seconds right-aligned with one decimal (12.345 -> 12.3, 40.25 -> 40.2 by
    # round-half-even on the binary value); total 0.84 + 12.345 + 95 + 40.25 + 0.3 = 148.735 -> 148.7.
    assert report.render() == (
        "ipt pipeline out/demo: 5 steps, 148.7 s\n"
        "stage        items in → out                    seconds  output\n"
        "-----------  ---------------------------  ------------  ----------------------------\n"
        "corpus                - → 1,234 docs      0.8 (reused)  out/demo/corpus/raw.jsonl\n"
        "convert raw  1,234 docs → 512 samples             12.3  out/demo/shards/raw\n"
        "synthesize     32 texts → 16 collections          95.0  out/demo/synth\n"
        "train         2 streams → 12 batches              40.2  out/demo/train\n"
        "plot raw                                           0.3  out/demo/raw-doc-lengths.png"
    )


def _manifest(directory, stage, stats, outputs=(), complete=True):
    directory.mkdir(parents=True)
    (directory / "manifest.json").write_text(json.dumps(
        {"stage": stage, "stats": stats, "outputs": list(outputs), "complete": complete}))
    return directory


def test_counts_come_from_each_stages_manifest(tmp_path):
    synth = _manifest(tmp_path / "synth", "synthesize", {"texts": 32, "pairs": 90},
                      [{"file": "part-00000.jsonl.zst", "rows": 10, "records": 20},
                       {"file": "part-00001.jsonl.zst", "rows": 6, "records": 12}])
    templ = _manifest(tmp_path / "templ", "templify", {"collections": 16, "texts": 41})
    shards = _manifest(tmp_path / "shards", "convert", {"documents": 41, "samples": 9, "tokens": 9000},
                       ["shard.00000.mds.zstd"])
    assert [tuple(map(str, manifest_counts(d))) for d in (synth, templ, shards)] == [
        ("32 texts", "16 collections"), ("16 collections", "41 texts"), ("41 docs", "9 samples")]
    assert manifest_counts(tmp_path / "missing") == (None, None)


def test_step_times_the_block_reads_the_manifest_and_marks_reused_output(tmp_path):
    done = _manifest(tmp_path / "done", "templify", {"collections": 3, "texts": 5})
    report = PipelineReport()
    with report.step("templify", done):
        pass
    fresh = tmp_path / "fresh"
    with report.step("convert", fresh):  # the manifest appears during the step: not reused
        _manifest(fresh, "convert", {"documents": 5, "samples": 2})
    with report.step("train") as row:
        row.items_out = Count(4, "batches")
    with pytest.raises(RuntimeError), report.step("broken", tmp_path / "broken"):
        raise RuntimeError("a failed step is not listed")
    assert [(r.stage, r.reused, str(r.items_in), str(r.items_out)) for r in report.rows] == [
        ("templify", True, "3 collections", "5 texts"), ("convert", False, "5 docs", "2 samples"),
        ("train", False, "None", "4 batches")]
    assert all(r.seconds is not None and 0 <= r.seconds < 5 for r in report.rows)
