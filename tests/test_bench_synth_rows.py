"""benchmarks.synth without vLLM: result rows carry repeats and spread, notes, the server's metrics."""

from __future__ import annotations

import http.server
import threading

import pytest

from benchmarks.schema import validate
from benchmarks.synth import LocalServer, _row, notes


def _detail(samples: list[float]) -> dict:
    return {"tokens_per_s": sorted(samples)[len(samples) // 2], "samples_tokens_per_s": samples}


def test_row_spread_and_repeats_follow_the_samples() -> None:
    base, ours = _detail([10.0, 14.0, 12.0]), _detail([20.0, 18.0])
    row = _row("synthesize x M=3 (generated tokens/s)", {"rounds": 3}, "generated tokens/s", "tokens_per_s",
               base, ours, None)
    assert row["repeats"] == 2  # the side with fewer samples bounds it
    assert row["spread"] == {"baseline": [10.0, 14.0], "ours": [18.0, 20.0]}
    assert row["ratio"] == pytest.approx(ours["tokens_per_s"] / base["tokens_per_s"])
    validate({"suite": "s", "timestamp": "t", "commit": None, "cases": [row],
              "env": {"python": "3", "torch": None, "triton": None, "vllm": None, "transformers": None,
                      "cpu": "c", "gpu": None}})


def test_notes_name_the_baselines_and_the_ratios() -> None:
    conf = {"3": {"paper": {"tokens_per_s": 100.0}, "+pipelined": {"tokens_per_s": 130.0},
                  "plain-generate": {"tokens_per_s": 200.0}, "serve-rounds": {"tokens_per_s": 80.0},
                  "serve-pipelined": {"tokens_per_s": 100.0}}}
    text = notes(conf, {"server": {}})
    assert "ONE round only" in text
    assert "1.30× paper" in text and "0.65× plain" in text and "1.25× round by round" in text
    assert "skipped" not in text
    assert "server baselines skipped: boom" in notes({}, {"server": {"skipped": "boom"}})


class _Metrics(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(type(self).body)

    def log_message(self, *args: object) -> None:
        pass


def test_prefix_counters_read_prometheus_text() -> None:
    _Metrics.body = (b"# HELP vllm:prefix_cache_hits x\n# TYPE vllm:prefix_cache_hits counter\n"
                     b'vllm:prefix_cache_hits_total{engine="0",model_name="m"} 30.0\n'
                     b'vllm:prefix_cache_queries_total{engine="0",model_name="m"} 120.0\n'
                     b'vllm:prefix_cache_queries_created{engine="0"} 1.7e9\n')
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Metrics)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        server = LocalServer("m", {}, timeout_s=1)
        server.port = httpd.server_address[1]
        assert server.prefix_counters() == (30.0, 120.0)
        assert server.hit_rate_since((10.0, 40.0)) == pytest.approx(20.0 / 80.0)
        assert server.hit_rate_since((30.0, 120.0)) is None  # no queries since: no rate
    finally:
        httpd.shutdown()
