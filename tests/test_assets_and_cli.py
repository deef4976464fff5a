"""Offline assets, the default corpus, readers' directory rule, and the CLI's contract."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ipt_engine.cli import main
from tests.conftest import REPO


def test_mistral_tokenizer_matches_raw_sentencepiece(mistral_tok, corpus_docs):
    import sentencepiece as spm

    from ipt_engine.assets import sentencepiece_model_path

    sp = spm.SentencePieceProcessor(model_file=str(sentencepiece_model_path()))
    # Literal "<s>"/"</s>" in text are special tokens to a Hugging Face tokenizer, plain text to SentencePiece.
    texts = [d["text"] for d in corpus_docs if "<s>" not in d["text"] and "</s>" not in d["text"]]
    texts += ["日本語のテキスト", "  two leading spaces", "tabs\tand\nnewlines\n\n", "emoji 🙂 and ü"]
    for t in texts:
        assert mistral_tok(t, add_special_tokens=False)["input_ids"] == sp.encode(t)
    assert mistral_tok.is_fast and mistral_tok.bos_token_id == 1 and mistral_tok.eos_token_id == 2
    # The synthesizer's prompt starts with a literal "<s>": it must become the single BOS.
    ids = mistral_tok("<s> <CON> text </CON>", add_special_tokens=False)["input_ids"]
    assert ids[0] == 1 and ids.count(1) == 1


def test_assets_are_deterministic(tmp_path):
    from ipt_engine.assets import mistral_tokenizer_dir, tiny_model_dir

    a = tiny_model_dir("mistral", cache_dir=tmp_path / "a", num_hidden_layers=1)
    b = tiny_model_dir("mistral", cache_dir=tmp_path / "b", num_hidden_layers=1)
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert mistral_tokenizer_dir(tmp_path / "a") == a.parent.parent / "tokenizers" / mistral_tokenizer_dir(tmp_path / "a").name
    assert tiny_model_dir("mistral", cache_dir=tmp_path / "a", num_hidden_layers=1) == a  # reused, not rebuilt


def test_tiny_model_loads_through_from_pretrained(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ipt_engine.assets import tiny_model_dir

    d = tiny_model_dir("llama", cache_dir=tmp_path, num_hidden_layers=1)
    model = AutoModelForCausalLM.from_pretrained(d)
    tok = AutoTokenizer.from_pretrained(d)
    cfg = model.config
    assert cfg.hidden_size // cfg.num_attention_heads >= 32
    ids = torch.tensor([tok("hello world")["input_ids"]])
    logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tok)) and torch.isfinite(logits).all()


def test_default_corpus_is_real_stdlib_text(corpus_docs):
    ids = [d["id"] for d in corpus_docs]
    assert len(set(ids)) == len(ids) and "__future__" in ids
    assert all(len(d["text"]) >= 200 for d in corpus_docs)
    joined = "\n".join(d["text"] for d in corpus_docs)
    assert "Module " in joined and "class " in joined


def test_directory_rule(tmp_path):
    from ipt_engine.io.discover import expand_inputs

    for rel in ["b/2.jsonl", "a.txt", "b/1.parquet", ".hidden.jsonl", "b/manifest.json", "b/rejects.jsonl",
                "c/notes.md", "b/.x/3.jsonl", "z.jsonl.zst"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    got = [str(p.relative_to(tmp_path)) for p in expand_inputs([str(tmp_path)])]
    assert got == ["a.txt", "b/1.parquet", "b/2.jsonl", "z.jsonl.zst"]


def test_help_is_fast_and_imports_nothing_heavy():
    code = ("import sys, time; t=time.time(); from ipt_engine.cli import build_parser; build_parser(); "
            "heavy=[m for m in ('torch','vllm','composer','streaming','transformers') if m in sys.modules]; "
            "print(heavy, time.time()-t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("[]"), out
    t = time.time()
    subprocess.run([sys.executable, "-m", "ipt_engine", "--help"], capture_output=True, check=True)
    assert time.time() - t < 5  # generous for a loaded CI machine; typically ~0.2 s


@pytest.mark.parametrize("command", ["convert", "inspect", "assets"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert "usage: ipt " + command in capsys.readouterr().out


def test_inspect_reports_and_plots(tmp_path, capsys, corpus_docs):
    from tests.helpers_data import write_jsonl

    src = write_jsonl(tmp_path / "in.jsonl", corpus_docs[:20])
    out = tmp_path / "mds"
    assert main(["convert", str(src), "-o", str(out), "--max-seq-len", "512", "--packing", "bfd",
                 "--workers", "0", "--no-progress"]) == 0
    capsys.readouterr()
    png = tmp_path / "h.png"
    assert main(["inspect", str(out), "--plot", str(png), "--decode", "1"]) == 0
    text = capsys.readouterr().out
    meta = json.loads((out / "ipt.json").read_text())
    assert f"documents     {meta['stats']['documents']}" in text
    assert "--- sample 0" in text and "<s>" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inspect_on_unfinished_output_is_one_line(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text("{}")
    assert main(["inspect", str(tmp_path)]) == 2
    assert "did not finish" in capsys.readouterr().err


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    assert "make test" in readme and "make test" in (REPO / ".ci" / "run").read_text()
    assert Path(REPO / "scripts" / "setup.sh").is_file()


def test_pipeline_raw_stage_runs_and_resumes(tmp_path, capsys):
    argv = ["pipeline", "--workdir", str(tmp_path), "--limit", "25", "--max-seq-len", "512", "--workers", "0",
            "--skip-synth", "--holdout", "0"]  # every document in the raw shards (the split: test_convert_split)
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "fill rate" in first and (tmp_path / "shards" / "raw" / "index.json").is_file()
    assert main(argv) == 0  # a rerun finds everything complete
    second = capsys.readouterr().out
    assert "already complete" in second
    title = f"ipt pipeline {tmp_path}: 2 steps"
    assert first.split("ipt inspect")[1].split(title)[0] == second.split("ipt inspect")[1].split(title)[0]
    # It ends with the table: both steps, their counts from the corpus and the manifest, the rerun reused.
    for out, reused in ((first, False), (second, True)):
        table = out[out.index(title):].splitlines()
        assert table[1].split() == ["stage", "items", "in", "→", "out", "seconds", "output"]
        corpus, convert = table[3].split(), table[4].split()
        assert corpus[:5] == ["corpus", "-", "→", "25", "docs"] and corpus[-1] == str(tmp_path / "corpus" / "raw.jsonl")
        assert convert[:7] == ["convert", "raw", "25", "docs", "→", convert[5], "samples"] and int(convert[5]) > 0
        assert convert[-1] == str(tmp_path / "shards" / "raw") and ("(reused)" in table[4]) == reused
        assert len(table) == 5
