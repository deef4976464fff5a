"""End-to-end runs on real shards: loss falls, a killed run resumes exactly, the export reloads.

Three real training processes on CPU over two real MDS streams mixed by proportion:

- A: ``ipt train examples/tiny-cpu.yaml`` with overrides, uninterrupted;
- B: the same config, SIGKILLed by the operating system in the middle of step 5 of an epoch (a callback
  sends the signal, so no cleanup code runs, as when a node dies);
- B restarted with ``composer -n 1 -m ipt_engine.train``: autoresume finds B's last checkpoint (step 4)
  and Streaming's saved position, and steps 5-6 must reproduce A's losses.
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

from tests.test_train_shards import write_demo_shards  # noqa: E402

pytestmark = pytest.mark.train

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KILL_AT = 5
STEPS = 6

KILLER = """
import os, signal, sys
from composer import Callback
from ipt_engine.train.config import load_config
from ipt_engine.train.main import train

class KillAt(Callback):
    def batch_end(self, state, logger):
        if int(state.timestamp.batch) == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)

train(load_config(sys.argv[1], sys.argv[3:]), extra_callbacks=[KillAt()])
"""


def _overrides(shards: Path, run: Path, name: str) -> list[str]:
    return [
        f"train_loader.streams.raw.local={shards / 'raw'}",
        f"train_loader.streams.augmented.local={shards / 'augmented'}",
        f"max_duration={STEPS}ba",
        "global_train_batch_size=4",
        "device_train_microbatch_size=2",
        "save_interval=2ba",
        f"save_folder={run / 'ckpt'}",
        f"loggers.jsonl.path={run / 'metrics.jsonl'}",
        f"export.hf_folder={run / 'hf'}",
        "loggers.console_log_interval=1ba",
        f"run_name={name}",
        "eval=null",  # the example's held-out streams are the demo's; these runs have none
    ]


def _start(cmd: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(proc: subprocess.Popen) -> tuple[int, str]:
    out, err = proc.communicate(timeout=600)
    return proc.returncode, (out + err)[-3000:]


def _losses(path: Path) -> dict[int, float]:
    out: dict[int, float] = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if "loss/train/total" in rec:
            out[rec["step"]] = rec["loss/train/total"]  # a resumed run's later line wins
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    shards = root / "shards"
    write_demo_shards(shards, max_seq_len=64)
    cfg = str(REPO / "examples" / "tiny-cpu.yaml")

    shutil.copytree(shards, root / "shards-b")  # concurrent runs never share a Streaming local dir
    b_over = _overrides(root / "shards-b", root / "B", "run-b")
    # A and the run to be killed are independent: run them side by side (one thread each).
    a = _start([str(BIN / "ipt"), "train", cfg, *_overrides(shards, root / "A", "run-a")], root)
    killed = _start([sys.executable, "-c", KILLER, cfg, str(KILL_AT), *b_over], root)
    rc, log = _wait(killed)
    assert rc == -9, log
    assert not (root / "B" / "hf").exists()
    rc, log = _wait(a)
    assert rc == 0, log

    resumed = _start([str(BIN / "composer"), "-n", "1", "-m", "ipt_engine.train", cfg, *b_over], root)
    rc, log = _wait(resumed)
    assert rc == 0, log
    return root, cfg


def test_loss_falls(runs):
    root, _ = runs
    losses = _losses(root / "A" / "metrics.jsonl")
    assert sorted(losses) == list(range(STEPS))
    assert losses[STEPS - 1] < losses[0] - 0.1


def test_killed_run_resumes_with_the_same_losses(runs):
    root, _ = runs
    a = _losses(root / "A" / "metrics.jsonl")
    b = _losses(root / "B" / "metrics.jsonl")
    assert sorted(b) == list(range(STEPS))
    for step in range(STEPS):
        assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-6), f"step {step}: {b[step]} != {a[step]}"
    ckpts = sorted(p.name for p in (root / "B" / "ckpt").glob("ep*-ba*-rank0.pt"))
    assert "ep0-ba4-rank0.pt" in ckpts  # where the restart picked up


def test_export_reloads_with_the_trained_weights(runs):
    """The exported directory loads with plain transformers and gives the final checkpoint's logits."""
    import numpy as np
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ipt_engine.data.tokenizer_info import load_tokenizer
    from ipt_engine.train.collator import PackedCollator
    from ipt_engine.train.composer_model import build_composer_model
    from ipt_engine.train.config import load_config
    from ipt_engine.train.model import build_hf_model

    root, cfg_path = runs
    hf_dir = root / "A" / "hf"
    exported = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    assert AutoTokenizer.from_pretrained(hf_dir).bos_token_id == 1

    cfg = load_config(cfg_path)
    tok = load_tokenizer("mistral-v1")
    trained = build_hf_model(cfg.model, tok)
    state = torch.load(root / "A" / "ckpt" / f"ep0-ba{STEPS}-rank0.pt", map_location="cpu", weights_only=False)
    weights = {k.removeprefix("model."): v for k, v in state["state"]["model"].items()}
    missing, unexpected = trained.load_state_dict(weights, strict=False)
    assert not unexpected and all("rotary" in k for k in missing)
    trained.eval()

    ids = torch.tensor([[1, 415, 2936, 9060, 285, 1142, 461, 2]])
    with torch.no_grad():
        plain = exported(input_ids=ids).logits
        torch.testing.assert_close(plain, trained(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
        # and the training-time packed path on two documents agrees with the exported model run on each
        cm = build_composer_model(trained, tok, "packed")
        batch = PackedCollator(16, 0)([{"tokens": np.concatenate([ids[0], ids[0][:5]]), "doc_lens": np.array([8, 5])}])
        # Logits come from the label-free forward (as evaluation calls it); with labels the training
        # forward returns the loss without materializing them.
        packed = cm({k: v for k, v in batch.items() if k != "labels"}).logits
        torch.testing.assert_close(packed[0, :8], plain[0], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(packed[0, 8:13], exported(input_ids=ids[:, :5]).logits[0], rtol=1e-4, atol=1e-4)
