"""Held-out loss per stream during training, and ``ipt eval`` on the model that run exported.

One real ``ipt train`` process (tiny Llama, CPU) trains 2 batches on two streams and evaluates two
held-out streams after every batch. The logged loss of each stream must equal a reference computed
independently: the exported model (float32 weights, cast to float64) run on each document piece of the
held-out shards alone, through plain transformers, the cross-entropy summed over every predicted token
and divided by their number. The same exported model then runs ``ipt eval`` on the shipped offline
tasks, whose scores are checked against our own scoring of the same items.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("composer")

from ipt_engine.errors import UserError  # noqa: E402
from tests.test_train_shards import corpus_texts, tokenizer, write_ipt_shards  # noqa: E402

pytestmark = pytest.mark.train

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STEPS = 2


def _run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    tok = tokenizer()
    raw, aug = corpus_texts("raw"), corpus_texts("augmented")
    write_ipt_shards(root / "raw", raw[:120], max_seq_len=64, tok=tok)
    write_ipt_shards(root / "augmented", aug[:120], max_seq_len=64, tok=tok)
    # held-out streams: other texts, 5 rows of 64 and 4 rows of 48 tokens (a partial last batch of 4)
    write_ipt_shards(root / "raw-holdout", raw[150:170], max_seq_len=64, tok=tok, max_rows=5)
    write_ipt_shards(root / "aug-holdout", aug[150:170], max_seq_len=48, tok=tok, max_rows=4)
    log = _run([sys.executable, "-m", "ipt_engine.train", str(REPO / "examples" / "tiny-cpu.yaml"),
                f"train_loader.streams.raw.local={root / 'raw'}",
                f"train_loader.streams.augmented.local={root / 'augmented'}",
                f"max_duration={STEPS}ba", "global_train_batch_size=4", "device_train_microbatch_size=2",
                "autoresume=false", "save_interval=1ba", f"save_folder={root / 'ckpt'}",
                f"loggers.jsonl.path={root / 'metrics.jsonl'}", f"export.hf_folder={root / 'hf'}",
                # replaces the example's streams: one given as a path, one as {local: ...}
                "eval.streams=" + json.dumps({"raw_holdout": str(root / "raw-holdout"),
                                              "aug_holdout": {"local": str(root / "aug-holdout")}}),
                "scheduler.t_warmup=0ba", "eval.interval=1ba", "eval.device_batch_size=3"], root)
    return root, log


def _logged(path: Path) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        out.setdefault(rec["step"], {}).update({k: v for k, v in rec.items() if k.startswith("metrics/")})
    return out


def _reference_loss(model, shard_dir: Path) -> tuple[float, int]:
    """Mean cross-entropy per predicted token over every document piece of the shards, each run alone."""
    from ipt_engine.data.shard_reader import iter_samples

    total, count = 0.0, 0
    for sample in iter_samples(shard_dir):
        tokens = np.asarray(sample["tokens"], dtype=np.int64)
        start = 0
        for n in np.asarray(sample["doc_lens"]).tolist():
            piece = torch.from_numpy(tokens[start:start + n])[None]
            start += n
            if n < 2:
                continue
            with torch.no_grad():
                logits = model(input_ids=piece).logits[0, :-1].double()
            total += float(torch.nn.functional.cross_entropy(logits, piece[0, 1:], reduction="sum"))
            count += n - 1
    return total / count, count


def test_held_out_loss_per_stream_equals_each_document_alone(trained):
    from transformers import AutoModelForCausalLM

    root, log = trained
    logged = _logged(root / "metrics.jsonl")
    for step in range(1, STEPS + 1):
        for name in ("raw_holdout", "aug_holdout"):
            assert f"metrics/{name}/LanguageCrossEntropy" in logged.get(step, {}), (step, sorted(logged.get(step, {})))
    model = AutoModelForCausalLM.from_pretrained(root / "hf", attn_implementation="eager").double().eval()
    for name, shards in (("raw_holdout", "raw-holdout"), ("aug_holdout", "aug-holdout")):
        want, n = _reference_loss(model, root / shards)
        assert n > 100
        got = logged[STEPS][f"metrics/{name}/LanguageCrossEntropy"]
        assert got == pytest.approx(want, rel=2e-5), name
        assert logged[STEPS][f"metrics/{name}/LanguagePerplexity"] == pytest.approx(math.exp(want), rel=1e-4)
    # the weights changed between the two evaluations, and the console shows one line per evaluator
    assert logged[1]["metrics/raw_holdout/LanguageCrossEntropy"] != logged[2]["metrics/raw_holdout/LanguageCrossEntropy"]
    lines = [ln for ln in log.splitlines() if ln.startswith("[eval @ batch")]
    assert len(lines) == 2 * STEPS
    want = logged[STEPS]["metrics/aug_holdout/LanguageCrossEntropy"]
    assert any(ln.startswith(f"[eval @ batch {STEPS}] aug_holdout: loss {want:.4f} ppl") for ln in lines), lines


def test_eval_config_is_checked():
    from ipt_engine.train.config import load_config

    cfg = str(REPO / "examples" / "tiny-cpu.yaml")
    ok = load_config(cfg, ["eval.streams.raw=/data/raw-holdout", "eval.interval=10ba"])
    assert ok.eval.streams["raw"].local == "/data/raw-holdout" and ok.eval.interval == "10ba"
    with pytest.raises(UserError, match=r"eval\.streams\.raw: proportion and repeat do not apply"):
        load_config(cfg, ["eval.streams.raw.local=/x", "eval.streams.raw.proportion=0.5"])
    with pytest.raises(UserError, match=r"eval\.streams"):
        load_config(cfg, ["eval.streams={'a/b': /x}"])
    with pytest.raises(UserError, match=r"eval\.interval"):
        load_config(cfg, ["eval.streams.raw=/x", "eval.interval=often"])
    with pytest.raises(UserError, match=r"eval\.streams"):
        load_config(cfg, ["eval.streams={}"])
    assert load_config(cfg, ["eval=null"]).eval is None
    example = load_config(cfg)  # the example evaluates the demo's two held-out streams
    assert sorted(example.eval.streams) == ["augmented_holdout", "raw_holdout"]


# ---------------------------------------------------------------- ipt eval on the exported model


def _eval_data(root: Path) -> Path:
    """Held-out read collections and texts (real stdlib prose; a question asks which text it is)."""
    from ipt_engine.eval.data import build_eval_data

    texts = corpus_texts("raw")[170:176]
    colls = [[{"context": t, "QA_list": [
        {"Q": "What is the first word of the text?", "A": t.split()[0]},
        {"Q": f"Which word appears in the text?\nOptions:\n- {t.split()[1]}\n- zebra\n- quantum", "A": t.split()[1]},
    ], "inherit_from_prev": False}] for t in texts]
    (root / "colls.jsonl").write_text("".join(json.dumps(c) + "\n" for c in colls))
    (root / "texts.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:4]))
    data = root / "eval-data"
    counts = build_eval_data(data, collections=[root / "colls.jsonl"], texts=[root / "texts.jsonl"],
                             max_context_chars=300, max_text_chars=400)
    assert counts == {"heldout_qa.jsonl": 12, "heldout_gen.jsonl": 6, "heldout_text.jsonl": 4}
    return data


def _loglik(model, ids: list[int], start: int) -> float:
    """Sum of log p(ids[t] | ids[:t]) for t >= start, in float64."""
    x = torch.tensor(ids)[None]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=x[:, :-1]).logits[0].double(), -1)
    return float(sum(logp[t - 1, ids[t]] for t in range(start, len(ids))))


def test_ipt_eval_offline_tasks_match_our_own_scoring(trained):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root, _ = trained
    data = _eval_data(root)
    tasks = "ipt_heldout_qa,ipt_heldout_gen,ipt_heldout_ppl"
    _run([sys.executable, "-m", "ipt_engine", "eval", str(root / "hf"), "--tasks", tasks, "--data", str(data),
          "-o", str(root / "hf.json"), "--batch-size", "4"], root)
    # the Composer checkpoint the run saved last holds the same weights, loaded the other way
    _run([sys.executable, "-m", "ipt_engine", "eval", str(root / "ckpt"), "--tasks", "ipt_heldout_qa",
          "--data", str(data), "-o", str(root / "ckpt.json"), "--attn", "packed"], root)
    hf, ck = (json.loads((root / f"{n}.json").read_text()) for n in ("hf", "ckpt"))
    assert (root / "hf.md").read_text().count("| ipt_heldout_") >= 3

    model = AutoModelForCausalLM.from_pretrained(root / "hf", attn_implementation="eager").double().eval()
    tok = AutoTokenizer.from_pretrained(root / "hf")
    items = [json.loads(line) for line in (data / "heldout_qa.jsonl").read_text().splitlines()]
    ours = []
    for item in items:
        context = f"{item['context']}\n\nQuestion: {item['question']}\nAnswer:"
        n_ctx = len(tok(context)["input_ids"])
        scores = [_loglik(model, tok(f"{context} {c}")["input_ids"], n_ctx) for c in item["choices"]]
        ours.append(float(int(np.argmax(scores)) == item["label"]))
    qa = hf["tasks"]["ipt_heldout_qa"]
    assert [v for _, v in qa["per_doc"]["acc"]] == ours
    assert qa["metrics"]["acc"]["value"] == pytest.approx(sum(ours) / len(ours))
    assert ck["tasks"]["ipt_heldout_qa"]["per_doc"]["acc"] == qa["per_doc"]["acc"]

    texts = [json.loads(line)["text"] for line in (data / "heldout_text.jsonl").read_text().splitlines()]
    ll = sum(_loglik(model, [tok.bos_token_id, *tok(t)["input_ids"]], 1) for t in texts)
    bpb = -ll / sum(len(t.encode()) for t in texts) / math.log(2)
    assert hf["tasks"]["ipt_heldout_ppl"]["metrics"]["bits_per_byte"]["value"] == pytest.approx(bpb, rel=1e-4)
    gen = hf["tasks"]["ipt_heldout_gen"]
    assert gen["n"] == 6 and 0.0 <= gen["metrics"]["exact_match"]["value"] <= 1.0
