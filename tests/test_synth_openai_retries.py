"""The OpenAI-compatible client's retries against a scripted completions server on 127.0.0.1.

The server plays a script, one behaviour per request: answer 500, stall past the client's timeout,
answer 4xx, answer garbage, or answer a completion. The server's own count of requests is the
reference for how many attempts the client made.
"""

from __future__ import annotations

import time

import pytest

from ipt_engine.synth.config import from_dict
from ipt_engine.synth.engines.openai_engine import OpenAIEngine, ServerError
from tests.helpers_http import LoopbackServer, json_reply

TIMEOUT_S = 0.4
STALL_S = 3.0  # well past TIMEOUT_S, so a stalled request is one failed attempt


class ScriptedServer(LoopbackServer):
    """Plays ``script`` (a list of "500", "stall", "404", "429", "garbage", "ok"); "ok" once it runs out."""

    def __init__(self, script: list[str]) -> None:
        self.script = list(script)
        self.calls: list[str] = []
        self.bodies: list[dict] = []
        super().__init__(self.handle)

    def handle(self, path, body):
        with self.lock:
            step = self.script.pop(0) if self.script else "ok"
            self.calls.append(step)
            self.bodies.append(body)
        if step == "stall":
            time.sleep(STALL_S)  # the client has given up by now; the answer below may find no one
            return json_reply(200, _completion("too late"))
        if step in ("500", "404", "429"):
            # An error page over several lines, as proxies and servers send them.
            return int(step), f"Error {step}\n\n  scripted failure\n".encode(), "text/plain"
        if step == "garbage":
            return 200, b"<html>\n<body>not json</body>\n</html>", "text/html"
        return json_reply(200, _completion(f"answer after {len(self.calls)} calls"))


def _completion(text: str) -> dict:
    return {"choices": [{"text": text, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 5}}


@pytest.fixture()
def server(request):
    s = ScriptedServer(request.param)
    yield s
    s.close()


def _engine(url: str, retries: int) -> OpenAIEngine:
    cfg = from_dict({"openai": {"base_urls": [url], "timeout_s": TIMEOUT_S, "concurrency": 2, "retries": retries},
                     "sampling": {"max_tokens": 8}})
    return OpenAIEngine("tiny", cfg, tokenizer=object())  # ids are passed in: no tokenizer is used


@pytest.mark.parametrize("server", [["500", "500", "stall", "garbage"]], indirect=True)
def test_fails_stalls_and_recovers(server):
    engine = _engine(server.url, retries=4)
    t0 = time.perf_counter()
    out = engine.request([1, 100, 200], 8)
    elapsed = time.perf_counter() - t0
    engine.close()
    assert server.calls == ["500", "500", "stall", "garbage", "ok"]  # 4 retries, the 5th attempt answered
    assert out.text == "answer after 5 calls" and out.tokens == 5 and out.finish_reason == "stop"
    # The stalled attempt was abandoned at the timeout, not waited out; backoff adds 0.05+0.1+0.2+0.4 s.
    assert TIMEOUT_S + 0.75 <= elapsed < STALL_S + 0.75
    assert all(b["prompt"] == [1, 100, 200] and b["max_tokens"] == 8 for b in server.bodies)


@pytest.mark.parametrize("server", [["500", "429", "500", "500"]], indirect=True)
def test_gives_up_after_the_retries(server):
    engine = _engine(server.url, retries=2)
    with pytest.raises(ServerError) as err:
        engine.request([1, 2], 8)
    engine.close()
    assert server.calls == ["500", "429", "500"]  # 1 attempt + 2 retries, no more
    message = str(err.value)
    assert message == f"{server.url}/completions: HTTP 500 Error 500 scripted failure"  # the last attempt's


@pytest.mark.parametrize("server", [["404"]], indirect=True)
def test_a_permanent_client_error_is_not_retried(server):
    engine = _engine(server.url, retries=3)
    with pytest.raises(ServerError) as err:
        engine.request([1, 2], 8)
    completions = engine.complete([[1, 2]], [8])  # through the batch path: an 'error' completion
    engine.close()
    assert server.calls == ["404", "ok"]  # one attempt for the refused request; the second one succeeds
    assert str(err.value) == f"{server.url}/completions: HTTP 404 Error 404 scripted failure"
    assert completions[0].text == "answer after 2 calls"


@pytest.mark.parametrize("server", [["stall", "stall"]], indirect=True)
def test_a_stalled_server_counts_as_failed(server):
    engine = _engine(server.url, retries=1)
    [result] = engine.complete([[1, 2]], [8])
    engine.close()
    assert server.calls == ["stall", "stall"]
    assert result.finish_reason == "error" and result.text == "" and result.tokens == 0
