"""Fast unit tests of the config, the drivers' failure handling and the command's import weight.

Engines here are test doubles; the real ones are exercised in the other files.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from ipt_engine.errors import UserError
from ipt_engine.synth.config import apply_overrides, from_dict, load_config
from ipt_engine.synth.engines import Completion
from ipt_engine.synth.pipelined import MAX_STEP_ERRORS, run_pipelined, run_rounds
from ipt_engine.synth.planner import plan_chains

pytestmark = pytest.mark.synth

PAIR = "<QUE> What is it? <ANS> A text. </END>"


def _chains(n=6, rounds=2):
    return plan_chains([f"text number {i} says something." for i in range(n)], rounds,
                       max_model_len=512, max_new_tokens=64, count_tokens=lambda s: len(s.split()))


class BatchEngine:
    """Answers every prompt with one pair; raises on the calls listed in ``fail_calls``."""

    supports_pipelining = False
    name = "double"

    def __init__(self, fail_calls=()):
        self.calls = 0
        self.fail_calls = set(fail_calls)

    def encode(self, prompt):
        return [1] + [len(w) for w in prompt.split()]

    def complete(self, prompts, max_tokens):
        self.calls += 1
        if self.calls in self.fail_calls:
            raise RuntimeError("device lost")
        return [Completion(PAIR, 9, "stop") for _ in prompts]


class StepEngine(BatchEngine):
    """submit/poll double: finishes one request per step; the steps in ``fail_steps`` raise."""

    supports_pipelining = True
    max_concurrency = None

    def __init__(self, fail_steps=(), refuse_longer_than=None):
        super().__init__()
        self.queue, self.steps, self.fail_steps, self.aborted = [], 0, set(fail_steps), []
        self.limit, self.submitted = refuse_longer_than, 0

    def submit(self, prompt, max_tokens):
        if self.limit is not None and len(prompt) > self.limit:
            raise ValueError("prompt refused")
        self.submitted += 1
        self.queue.append(f"req-{self.submitted}")
        return self.queue[-1]

    def poll(self):
        self.steps += 1
        if self.steps in self.fail_steps:
            raise RuntimeError("step failed")
        return [(self.queue.pop(0), Completion(PAIR, 9, "stop"))] if self.queue else []

    def abort(self, ids):
        self.aborted += ids
        self.queue = [q for q in self.queue if q not in ids]


def test_failed_batch_is_retried_then_isolated():
    chains = _chains()
    stats = run_rounds(chains, BatchEngine(fail_calls={1}), batch_size=2)  # first batch of round 1 fails
    entries = [c.entries() for c in chains]
    assert stats.failed_requests == 2
    assert all(len(e) == 2 for e in entries) and all(x["QA_list"] for e in entries for x in e)


def test_twice_failed_batch_records_raw_text_and_run_goes_on():
    chains = _chains()
    engine = BatchEngine(fail_calls={1, 3})  # call 3 is the retry of call 1's chains (round-1 retries)
    run_rounds(chains, engine, batch_size=2)
    firsts = [c.entries()[0] for c in chains]
    assert [bool(f["QA_list"]) for f in firsts] == [False, False, True]
    assert all(len(c.entries()) == 2 for c in chains)


def test_pipelined_step_failure_retries_inflight_requests():
    chains = _chains()
    stats = run_pipelined(chains, StepEngine(fail_steps={2}))
    assert stats.failed_requests > 0
    assert all(x["QA_list"] for c in chains for x in c.entries())
    assert stats.requests == 6


def test_pipelined_refused_prompt_fails_alone():
    texts = ["word " * 60] + [f"text number {i} says something." for i in range(1, 4)]
    chains = plan_chains(texts, 1, max_model_len=512, max_new_tokens=64, count_tokens=lambda s: len(s.split()))
    stats = run_pipelined(chains, StepEngine(refuse_longer_than=40))
    assert stats.failed_requests == 2  # the first try and its one retry
    assert [bool(c.entries()[0]["QA_list"]) for c in chains] == [False, True, True, True]


def test_pipelined_gives_up_on_a_broken_engine():
    with pytest.raises(RuntimeError, match="step failed"):
        run_pipelined(_chains(), StepEngine(fail_steps=set(range(1, MAX_STEP_ERRORS + 1))))


def test_config_validation_and_overrides(tmp_path):
    assert from_dict({}).sampling.max_tokens == 400 and from_dict({}).sampling.temperature == 0
    cfg = apply_overrides(from_dict({}), ["engine.max_num_seqs=8", "engine.ngram_speculation=true"])
    assert cfg.engine.max_num_seqs == 8 and cfg.engine.ngram_speculation
    for bad, message in [
        ({"engine": {"max_num_seq": 1}}, "engine.max_num_seq: unknown key (known keys here: batch_size, dtype, "),
        ({"engine": {"max_num_seqs": 0}}, "engine.max_num_seqs: must be >= 1, got 0"),
        ({"engine": {"gpu_memory_utilization": 1.5}}, "engine.gpu_memory_utilization: must be <= 1, got 1.5"),
        ({"engine": {"gpu_memory_utilization": 0}}, "engine.gpu_memory_utilization: must be > 0, got 0"),
        ({"sampling": {"max_tokens": 4096}},
         "sampling.max_tokens: must be smaller than engine.max_model_len (4096) to leave room for the prompt, got 4096"),
        ({"engine": {"prompt_lookup_min": 3, "prompt_lookup_max": 2}},
         "engine.prompt_lookup_max: must be at least engine.prompt_lookup_min (3), got 2"),
        ({"scheduler": "fast"}, "scheduler: must be one of 'auto', 'pipelined' or 'rounds', got 'fast'"),
        ({"engine": {"enforce_eager": "maybe"}}, "engine.enforce_eager: must be true or false, got 'maybe'"),
        ({"openai": {"retries": -1}}, "openai.retries: must be >= 0, got -1"),
    ]:
        with pytest.raises(UserError) as e:
            from_dict(bad)
        assert str(e.value).startswith(message), (str(e.value), message)
    with pytest.raises(UserError, match="expected KEY=VALUE"):
        apply_overrides(from_dict({}), ["engine.max_num_seqs"])
    with pytest.raises(UserError, match=r"^command line: sampling\.top_p: must be <= 1, got 2$"):
        apply_overrides(from_dict({}), ["sampling.top_p=2"])
    path = tmp_path / "c.yaml"
    path.write_text("engine: [1, 2]\n")
    with pytest.raises(UserError, match=f"^{path}: engine: must be a mapping, got \\[1, 2\\]$"):
        load_config(path)
    path.write_text("engine:\n  max_num_seqs: 4\n")
    assert load_config(path).engine.max_num_seqs == 4
    assert load_config(path, ["engine.max_num_seqs=9"]).engine.max_num_seqs == 9


def test_command_module_imports_only_the_standard_library():
    code = ("import sys, ipt_engine.commands.synthesize as m; "
            "print(sorted(x for x in ('vllm','torch','transformers','yaml','numpy') if x in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_pipelined_window_gives_a_finished_slot_to_the_same_chain_first():
    class Recorder(StepEngine):
        def __init__(self):
            super().__init__()
            self.order, self.peak = [], 0

        def submit(self, prompt, max_tokens):
            self.order.append(prompt)
            request_id = super().submit(prompt, max_tokens)
            self.peak = max(self.peak, len(self.queue))
            return request_id

    texts = ["x" * (10 + i) for i in range(8)]  # each text one word of a telling length
    chains = plan_chains(texts, 2, max_model_len=512, max_new_tokens=64, count_tokens=lambda s: len(s.split()))
    engine = Recorder()
    run_pipelined(chains, engine, max_inflight=2)
    assert engine.peak == 2
    sent = [prompt[-2] - 10 for prompt in engine.order]  # the text of each prompt, in sending order
    # 4 chains (0,4) (1,5) (2,6) (3,7): chains 0 and 1 start; each finished slot goes to the same chain's
    # next round before a new chain starts.
    assert sent == [0, 1, 4, 5, 2, 3, 6, 7]


def test_print_config_and_schema(tmp_path, capsys):
    import yaml

    from ipt_engine.cli import main

    cfg = tmp_path / "synth.yaml"
    cfg.write_text("engine:\n  max_num_seqs: 4\nsampling:\n  max_tokens: 100\n")
    # --print-config needs neither inputs nor --output/--model: only what the config is made of
    assert main(["synthesize", "--config", str(cfg), "--set", "engine.max_num_seqs=16", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["engine"]["max_num_seqs"] == 16 and printed["sampling"]["max_tokens"] == 100
    assert printed["sampling"]["temperature"] == 0 and printed["scheduler"] == "auto"  # the paper's defaults
    assert from_dict(printed) == load_config(cfg, ["engine.max_num_seqs=16"])
    assert main(["synthesize", "--print-config", "--set", "sampling.top_p=0"]) == 2
    assert capsys.readouterr().err == "ipt synthesize: error: command line: sampling.top_p: must be > 0, got 0\n"
    cfg.write_text("sampling:\n  max_tokens: -5\n")
    assert main(["synthesize", "in.jsonl", "-o", str(tmp_path / "o"), "-m", "x", "--config", str(cfg)]) == 2
    assert capsys.readouterr().err == f"ipt synthesize: error: {cfg}: sampling.max_tokens: must be >= 1, got -5\n"
    with pytest.raises(SystemExit) as e:
        main(["synthesize", "--schema"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert "engine.max_num_seqs: integer | null = null\n    Most sequences vLLM schedules at once" in out
    assert "sampling.max_tokens: integer = 400" in out
