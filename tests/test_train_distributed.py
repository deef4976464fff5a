"""Training on several processes with Composer's own launcher (``composer -n 2``, gloo on CPU).

One real two-rank run and one real single-process run with the same global batch, on the same
16-sample epoch, side by side:

- the two ranks read disjoint samples that together cover the epoch exactly;
- the logged loss of every step equals the single process's (Composer averages the ranks' losses, and
  Streaming gives both world sizes the same global sample order);
- the export at the end happens once, on rank 0, from the model inside the DDP wrapper, and holds the
  same weights as the single process's export;
- running the finished single-process config again is not an error: it says so and re-exports a
  missing export.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("composer")

from tests.test_train_shards import corpus_texts, write_ipt_shards  # noqa: E402

pytestmark = pytest.mark.train

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SAMPLES = 16
GLOBAL_BATCH = 4

def _config(tmp: Path, shards: Path, run: Path) -> Path:
    """tiny-cpu.yaml on ``shards``, with its export, metrics and the per-rank batch log under ``run``."""
    import yaml

    cfg = yaml.safe_load((REPO / "examples" / "tiny-cpu.yaml").read_text())
    cfg["train_loader"]["streams"] = {"raw": {"local": str(shards)}}
    cfg.pop("eval", None)  # the example's held-out streams are the demo's; these runs have none
    cfg.update(max_duration=f"{SAMPLES // GLOBAL_BATCH}ba", global_train_batch_size=GLOBAL_BATCH, device_train_microbatch_size=2,
               save_folder=str(run / "ckpt"), save_interval="2ba", run_name=run.name,
               loggers={"console_log_interval": "1ba", "jsonl": {"path": str(run / "metrics.jsonl")}},
               export={"hf_folder": str(run / "hf"), "dtype": "float32"})
    cfg.setdefault("callbacks", {})["batch_log"] = {"folder": str(run)}
    cfg["scheduler"]["t_warmup"] = "1ba"
    path = tmp / f"{run.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _start(cmd: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


def _losses(path: Path) -> dict[int, float]:
    return {r["step"]: r["loss/train/total"] for r in map(json.loads, path.read_text().splitlines())
            if "loss/train/total" in r}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    write_ipt_shards(root / "shards-1", corpus_texts("raw"), max_seq_len=64, max_rows=SAMPLES)
    shutil.copytree(root / "shards-1", root / "shards-2")  # concurrent runs never share a Streaming dir
    one, two = root / "one", root / "two"
    for run in (one, two):
        run.mkdir()
    cfg1 = _config(root, root / "shards-1", one)
    cfg2 = _config(root, root / "shards-2", two)
    # The user's commands: one process, and Composer's launcher with two ranks (gloo on CPU).
    p1 = _start([sys.executable, "-m", "ipt_engine.train", str(cfg1)], root)
    p2 = _start([str(BIN / "composer"), "-n", "2", "--master_port", "29517", "-m", "ipt_engine.train", str(cfg2)], root)
    results = {"one": _finish(p1), "two": _finish(p2)}
    for name, (rc, out, err) in results.items():
        assert rc == 0, f"{name}: {(out + err)[-4000:]}"
    return root, cfg1


def _rows(path: Path) -> list[str]:
    """The digests of every row a rank trained on (callbacks.batch_log)."""
    return [row for rec in map(json.loads, path.read_text().splitlines()) for row in rec["rows"]]


def test_ranks_read_disjoint_samples_covering_the_epoch(runs):
    root, _ = runs
    rank0, rank1 = _rows(root / "two" / "batches-rank0.jsonl"), _rows(root / "two" / "batches-rank1.jsonl")
    assert len(rank0) == len(rank1) == SAMPLES // 2
    assert not set(rank0) & set(rank1)
    single = _rows(root / "one" / "batches-rank0.jsonl")
    assert len(single) == SAMPLES and len(set(single)) == SAMPLES
    assert sorted(rank0 + rank1) == sorted(single)


def test_two_ranks_give_the_single_process_losses(runs):
    root, _ = runs
    one, two = _losses(root / "one" / "metrics.jsonl"), _losses(root / "two" / "metrics.jsonl")
    steps = SAMPLES // GLOBAL_BATCH
    assert sorted(one) == sorted(two) == list(range(steps))
    for step in range(steps):
        assert two[step] == pytest.approx(one[step], rel=1e-5, abs=1e-6), f"step {step}: {two[step]} != {one[step]}"


def test_rank_zero_exports_the_trained_weights_once(runs):
    from safetensors.torch import load_file

    root, _ = runs
    files = sorted((root / "two" / "hf").glob("*.safetensors"))
    assert files and (root / "two" / "hf" / "config.json").is_file()
    two = load_file(files[0])
    one = load_file(sorted((root / "one" / "hf").glob("*.safetensors"))[0])
    assert two.keys() == one.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)


def test_a_finished_run_started_again_says_so_and_reexports(runs):
    root, cfg1 = runs
    hf = root / "one" / "hf"
    before = {p.name: p.read_bytes() for p in hf.glob("*.safetensors")}
    shutil.rmtree(hf)
    rc, out, err = _finish(_start([str(BIN / "ipt"), "train", str(cfg1)], root))
    assert rc == 0, (out + err)[-4000:]
    assert "Traceback" not in err
    assert f"already trained to {SAMPLES // GLOBAL_BATCH}ba" in err and "raise max_duration to continue" in err
    assert "ep0-ba4-rank0.pt" in err  # names the checkpoint it found
    assert {p.name: p.read_bytes() for p in hf.glob("*.safetensors")} == before


def test_row_digests_see_real_tokens_only():
    from ipt_engine.train.callbacks import row_digests

    ids = torch.tensor([[5, 6, 7, 0, 0], [5, 6, 7, 9, 9], [5, 6, 7, 1, 2]])
    lens = torch.tensor([[3, 0], [2, 2], [3, 0]])  # row 2's padding differs from row 0's: same sample
    d = row_digests(ids, lens)
    assert d[0] == d[2] != d[1] and all(len(x) == 16 for x in d)
