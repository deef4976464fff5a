"""The OpenAI-compatible client against small completions servers on 127.0.0.1 started here.

The servers check what a `vllm serve` instance would receive: token ids (not a string), one BOS in
front, the sampling fields. One of them fails now and then, as servers in a fleet do.
"""

from __future__ import annotations

import pytest

from tests.helpers_http import LoopbackServer, json_reply

pytest.importorskip("transformers")

from ipt_engine.errors import UserError  # noqa: E402
from ipt_engine.synth.config import from_dict  # noqa: E402
from ipt_engine.synth.engines.openai_engine import OpenAIEngine, ServerError  # noqa: E402
from ipt_engine.synth.pipelined import run_pipelined, run_rounds  # noqa: E402
from ipt_engine.synth.planner import plan_chains  # noqa: E402
from ipt_engine.synth.prompt import encode_prompt  # noqa: E402

TEXTS = [f"Module number {i} documents how its functions read and write files." for i in range(7)]
REJECTED = "This text is rejected by the server."


class Server(LoopbackServer):
    """A completions endpoint on a free loopback port; ``fail_every`` answers 503 to every n-th call."""

    def __init__(self, tokenizer, fail_every: int = 0) -> None:
        self.received: list[dict] = []
        self.calls = 0
        self.fail_every = fail_every
        self.rejected_ids = tokenizer(REJECTED, add_special_tokens=False)["input_ids"][2:8]
        super().__init__(self.handle)

    def handle(self, path, body):
        with self.lock:
            self.calls += 1
            flaky = self.fail_every and self.calls % self.fail_every == 0
        if path != "/v1/completions" or flaky:
            return json_reply(404 if not flaky else 503, {"error": "unavailable"})
        prompt = body["prompt"]
        if not (isinstance(prompt, list) and all(isinstance(t, int) for t in prompt)):
            return json_reply(400, {"error": "expected token ids"})
        if _contains(prompt, self.rejected_ids):
            return json_reply(400, {"error": "prompt rejected"})
        with self.lock:
            self.received.append(body)
        text = f"<QUE> How many tokens does the prompt hold? <ANS> {len(prompt)}. </END>"
        return json_reply(200, {"choices": [{"text": text, "finish_reason": "stop"}],
                                "usage": {"prompt_tokens": len(prompt), "completion_tokens": 14}})


def _contains(seq, sub):
    return any(seq[i : i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from ipt_engine.assets import mistral_tokenizer_dir

    tok = AutoTokenizer.from_pretrained(mistral_tokenizer_dir())
    if len(tok) < 32000:
        pytest.skip("this transformers version builds the Mistral tokenizer without its vocabulary")
    return tok


@pytest.fixture()
def servers(tokenizer):
    fleet = [Server(tokenizer), Server(tokenizer, fail_every=3)]
    yield fleet
    for s in fleet:
        s.close()


def _engine(urls, tokenizer, **openai):
    cfg = from_dict({"openai": {"base_urls": urls, "timeout_s": 10, "concurrency": 4, **openai},
                     "sampling": {"max_tokens": 32}, "engine": {"max_model_len": 512}})
    return OpenAIEngine("tiny", cfg, tokenizer=tokenizer)


def _plan(texts, tokenizer, rounds=3):
    return plan_chains(texts, rounds, max_model_len=512, max_new_tokens=32, tokenizer=tokenizer)


def test_pipelined_over_a_fleet_sends_token_ids_with_one_bos(servers, tokenizer):
    engine = _engine([s.url for s in servers], tokenizer)
    chains = _plan(TEXTS, tokenizer)
    stats = run_pipelined(chains, engine)
    engine.close()
    entries = [e for c in chains for e in c.entries()]
    assert stats.requests == len(TEXTS) and stats.failed_requests == 0  # 503s were retried on the other server
    assert all(e["QA_list"] for e in entries)
    assert sum(e["inherit_from_prev"] for e in entries) == len(TEXTS) - len(chains)
    received = servers[0].received + servers[1].received
    assert servers[0].received and servers[1].received and len(received) == len(TEXTS)
    bos = tokenizer.bos_token_id
    for body in received:
        assert body["prompt"][0] == bos and body["prompt"][1] != bos
        assert body["model"] == "tiny" and body["temperature"] == 0 and body["max_tokens"] == 32
    # The ids are the planner's, i.e. the prompt encoded once with the model's own tokenizer.
    first = _plan(TEXTS, tokenizer)[0].next_request()
    assert first.prompt_token_ids == encode_prompt(first.prompt, tokenizer)
    assert first.prompt_token_ids in [b["prompt"] for b in received]


def test_round_by_round_gives_the_same_collections(servers, tokenizer):
    engine = _engine([s.url for s in servers], tokenizer)
    piped, rounds = _plan(TEXTS, tokenizer), _plan(TEXTS, tokenizer)
    run_pipelined(piped, engine)
    stats = run_rounds(rounds, engine)
    engine.close()
    assert [c.entries() for c in piped] == [c.entries() for c in rounds]
    assert stats.rounds == [3, 3, 1]  # chains [0, 3, 6], [1, 4], [2, 5]


def test_a_rejected_request_fails_alone(servers, tokenizer):
    engine = _engine([servers[0].url], tokenizer)
    chains = _plan([REJECTED, *TEXTS[:3]], tokenizer, rounds=1)
    stats = run_pipelined(chains, engine)
    engine.close()
    assert stats.failed_requests == 2  # the request and its one retry, each answered 400 without resending
    assert [bool(c.entries()[0]["QA_list"]) for c in chains] == [False, True, True, True]


def test_unreachable_servers_fail_after_retries(tokenizer):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = _engine([f"http://127.0.0.1:{port}/v1"], tokenizer, retries=1)
    with pytest.raises(ServerError):
        engine.request([tokenizer.bos_token_id, 100], 4)
    chains = _plan(TEXTS[:2], tokenizer, rounds=1)
    stats = run_pipelined(chains, engine)
    engine.close()
    assert stats.failed_requests == 4 and all(not c.entries()[0]["QA_list"] for c in chains)


def test_configuration_errors(tokenizer):
    with pytest.raises(UserError, match="base_urls"):
        _engine([], tokenizer)
    with pytest.raises(UserError, match="not an http"):
        _engine(["127.0.0.1:8000"], tokenizer)
    with pytest.raises(UserError, match="IPT_TEST_MISSING_KEY"):
        _engine(["http://127.0.0.1:1/v1"], tokenizer, api_key_env="IPT_TEST_MISSING_KEY")
