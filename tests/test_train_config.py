"""Training configs: YAML + dotted overrides into typed pydantic sections, and one-line errors for mistakes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ipt_engine.errors import UserError
from ipt_engine.train.config import TrainConfig, check_batch_sizes, check_local_paths, load_config

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "examples" / "tiny-cpu.yaml"
BIG = REPO / "examples" / "llama-1b-8xh100.yaml"


def _one_line_error(*overrides: str, path: Path = TINY) -> str:
    with pytest.raises(UserError) as e:
        load_config(path, list(overrides))
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_examples_parse():
    tiny = load_config(TINY)
    assert isinstance(tiny, TrainConfig)
    assert tiny.train_loader.streams["raw"].local == "out/demo/shards/raw"
    assert tiny.train_loader.streams["augmented"].local == "out/demo/shards/augmented"
    assert {s.proportion for s in tiny.train_loader.streams.values()} == {0.5}
    assert tiny.model.pretrained is False and tiny.model.model_type == "llama"
    big = load_config(BIG)
    assert big.fsdp_config["sharding_strategy"] == "FULL_SHARD"
    assert check_batch_sizes(big, 8) == 64


def test_overrides_reach_nested_keys_and_parse_as_yaml():
    cfg = load_config(TINY, ["train_loader.streams.raw.local=/data/raw", "optimizer.lr=1e-4",
                             "optimizer.betas=[0.8, 0.9]", "callbacks.speed_monitor=null", "max_duration=5ba",
                             "model.config_overrides.num_hidden_layers=3"])
    assert cfg.train_loader.streams["raw"].local == "/data/raw"
    assert cfg.optimizer.lr == 1e-4  # YAML 1.1 reads `1e-4` as a string; a float field takes it
    assert cfg.optimizer.betas == [0.8, 0.9]
    assert cfg.callbacks.speed_monitor is None
    assert cfg.model.config_overrides["num_hidden_layers"] == 3


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["train_loader.shufle=true"], r"^command line: train_loader\.shufle: unknown key \(known keys here: cache_limit, "),
        (["model.attn_implementation=flash"], r"model\.attn_implementation: must be one of 'packed', 'flex', 'sdpa_dense' or 'sdpa_segments', got 'flash'$"),
        (["global_train_batch_size=eight"], r"global_train_batch_size: must be an integer, got 'eight'$"),
        (["global_train_batch_size=0"], r"global_train_batch_size: must be > 0, got 0$"),
        (["optimizer.lr=-1"], r"^command line: optimizer\.lr: must be > 0, got -1$"),
        (["train_loader.streams.raw.proportion=half"], r"train_loader\.streams\.raw\.proportion: must be a number, got 'half'$"),
        (["train_loader.streams.raw.proportion=null"], r"train_loader\.streams\.raw\.proportion: set a proportion on every"),
        (["max_duration=10 steps"], r"max_duration: must be a Composer time .*, got '10 steps'$"),
        (["train_loader.shuffle=yes please"], r"train_loader\.shuffle: must be true or false, got 'yes please'$"),
        (["device_train_microbatch_size=0"], r"device_train_microbatch_size: must be > 0 or 'auto', got 0$"),
        (["train_loader.streams.raw.local=null"], r"train_loader\.streams\.raw: give local, remote or both$"),
        (["model.cross_entropy_chunk_size=0", "seed=x"], r"chunk_size: must be > 0, got 0 \(and 1 more error\)$"),
        (["run_name=null"], r"autoresume: needs run_name"),
        (["fsdp_config={sharding_strategy: FULL_SHARD, shard_everything: true}"], r"fsdp_config\.shard_everything: unknown key"),
        (["model.model_type=null"], r"model: set pretrained_model_name_or_path"),
        (["optimizer"], r"expected KEY=VALUE"),
        (["callbacks.speed_monitor.window_size.x=1"], r"is a value, not a section"),
    ],
)
def test_bad_configs_fail_with_one_line(overrides, expected):
    import re

    assert re.search(expected, _one_line_error(*overrides))


def test_missing_required_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model: {model_type: llama}\ntrain_loader: {streams: {a: {local: x}}}\nmax_duration: 1ba\n")
    assert _one_line_error(path=p) == f"{p}: global_train_batch_size: missing required key"
    p.write_text("model: {model_type: llama}\ntrain_loader: {streams: {a: {local: x}}}\nmax_duration: 1ba\n"
                 "global_train_batch_size: 4\noptimizer: {lr: -1}\n")
    assert _one_line_error(path=p) == f"{p}: optimizer.lr: must be > 0, got -1"
    assert "config file not found" in _one_line_error(path=tmp_path / "nope.yaml")
    p.write_text("model: [\n")
    assert "invalid YAML" in _one_line_error(path=p)


def test_batch_sizes_must_divide():
    cfg = load_config(TINY, ["global_train_batch_size=6", "device_train_microbatch_size=4"])
    with pytest.raises(UserError, match="does not divide evenly over 4 devices"):
        check_batch_sizes(cfg, 4)
    with pytest.raises(UserError, match=r"device_train_microbatch_size: 4 does not divide the per-device batch size 6"):
        check_batch_sizes(cfg, 1)
    cfg = load_config(TINY, ["device_train_microbatch_size=auto"])
    assert check_batch_sizes(cfg, 2) == 4


def test_missing_shard_directory(tmp_path):
    cfg = load_config(TINY, [f"train_loader.streams.raw.local={tmp_path / 'none'}"])
    with pytest.raises(UserError, match=r"train_loader\.streams\.raw\.local: .* has no index\.json"):
        check_local_paths(cfg)


def test_cli_prints_one_line_and_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ipt_engine", "train", str(TINY), "train_loader.shufle=true"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["ipt train: error: command line: train_loader.shufle: unknown key "
                                                + proc.stderr.split("unknown key ", 1)[1].strip()]
    proc = subprocess.run([sys.executable, "-m", "ipt_engine.train", str(TINY), f"train_loader.streams.raw.local={tmp_path}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("ipt train: error: train_loader.streams.raw.local:")


def test_train_command_imports_only_the_standard_library():
    code = ("import sys, ipt_engine.commands.train; "
            "bad = [m for m in ('torch', 'composer', 'streaming', 'transformers', 'yaml', 'numpy') if m in sys.modules]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.train
def test_llama_1b_builds_on_the_meta_device():
    pytest.importorskip("composer")
    import torch

    from ipt_engine.data.tokenizer_info import load_tokenizer
    from ipt_engine.train.composer_model import flops_for, matmul_params
    from ipt_engine.train.model import build_hf_model

    cfg = load_config(BIG)
    model = build_hf_model(cfg.model, load_tokenizer("mistral-v1"))
    assert all(p.device == torch.device("meta") for p in model.parameters())
    n = sum(p.numel() for p in model.parameters())
    assert 1.0e9 < n < 1.3e9, n
    assert model.config._attn_implementation == "ipt_packed"
    layer = model.model.layers[0]
    assert model.fsdp_wrap_fn(layer) and not model.fsdp_wrap_fn(model.model.embed_tokens)
    # 6·P·T dominates; attention over a full causal 4096-token document adds about a fifth more
    p = matmul_params(model)
    dense = flops_for(model.config, p, 4096, 0)
    full = flops_for(model.config, p, 4096, 4096 * 4097 // 2)
    assert dense == 6 * p * 4096 and 1.1 < full / dense < 1.4


@pytest.mark.train
def test_meta_init_matches_a_cpu_built_model():
    """What FSDP does with a meta model: to_empty then param_init_fn per module, rotary buffers included."""
    pytest.importorskip("composer")
    import torch

    from ipt_engine.data.tokenizer_info import load_tokenizer
    from ipt_engine.train.model import build_hf_model

    tok = load_tokenizer("mistral-v1")
    cpu = build_hf_model(load_config(TINY).model, tok)
    meta_cfg = load_config(TINY, ["model.init_device=meta"]).model
    meta = build_hf_model(meta_cfg, tok)
    for module in meta.modules():
        if any(t.is_meta for t in [*module.parameters(recurse=False), *module.buffers(recurse=False)]):
            module.to_empty(device="cpu", recurse=False)
            meta.param_init_fn(module)
    meta.tie_weights()
    for (name, a), (_, b) in zip(cpu.named_buffers(), meta.named_buffers()):
        torch.testing.assert_close(a, b, msg=name)
    for (name, a), (_, b) in zip(cpu.named_parameters(), meta.named_parameters()):
        assert not b.is_meta and a.shape == b.shape, name
        assert abs(float(a.std()) - float(b.std())) < 0.05 * float(a.std()) + 1e-6, name  # same init, other draws


def test_attention_names_are_the_kernels_names():
    from ipt_engine.kernels.backends import BACKENDS

    from ipt_engine.train.attention import REGISTERED, kernel_backend

    for impl in REGISTERED:
        assert load_config(TINY, [f"model.attn_implementation={impl}"]).model.attn_implementation == impl
        assert kernel_backend(impl, "cuda") == impl and kernel_backend(impl, "cpu") in BACKENDS
    assert kernel_backend("packed", "cpu") == "sdpa_segments"  # the Triton kernel needs CUDA


def test_the_earlier_sdpa_name_still_reads_as_sdpa_dense():
    with pytest.warns(FutureWarning, match="now called 'sdpa_dense'"):
        cfg = load_config(TINY, ["model.attn_implementation=sdpa"])
    assert cfg.model.attn_implementation == "sdpa_dense"
