"""OpenAI-compatible completions client for a fleet of running ``vllm serve`` instances.

Requests go to ``POST {base_url}/completions`` with ``prompt`` set to **token ids** (a list of ints,
which vLLM's completions API accepts): the server neither tokenizes the prompt again nor adds a
second BOS, and the token budget the planner counted locally with the model's own tokenizer is what
the server sees. Requests are spread over the base URLs (each request goes to the next URL, in turn)
and run concurrently on a thread pool; a connection error or a 5xx answer is retried on the next URL
before the request counts as failed.

The engine offers both ``complete`` (a batch, round by round) and ``submit`` / ``poll`` (the chain-
pipelined loop of :mod:`ipt_engine.synth.pipelined`): with a fleet behind it, a chain's next round
is sent as soon as its previous one returns, like with the offline vLLM engine.

Transport is ``httpx`` (one pooled client, shared by the worker threads, so connections to a server
are reused instead of opened per request) and the retry policy is ``tenacity``'s: up to
``openai.retries`` more attempts with exponential backoff (0.05 s, doubling, at most 2 s), each on the
next URL. Retried: connection errors, timeouts (``openai.timeout_s`` bounds connecting, each read and
each write, so a stalled server counts as a failed attempt), 5xx and 429 answers, and answers that are
not a completion. Not retried: any other 4xx, since the same request would be refused again. Neither
library needs vLLM or torch, so the client runs in either environment; ``transformers`` is needed for
the tokenizer alone.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import json
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import httpx
import tenacity

from ipt_engine.data.tokenizer_info import load_tokenizer
from ipt_engine.errors import UserError
from ipt_engine.synth.config import SynthConfig
from ipt_engine.synth.engines import Completion, Engine

log = logging.getLogger(__name__)


class ServerError(RuntimeError):
    """A server answered with an error, or could not be reached, after the retries (one line)."""


class _Transient(Exception):
    """One failed attempt that another attempt, on the next server, may get past."""


class OpenAIEngine(Engine):
    name = "openai"
    supports_pipelining = True

    def __init__(self, model: str, config: SynthConfig, *, tokenizer: Any = None) -> None:
        o = config.openai
        if not o.base_urls:
            raise UserError("--engine openai needs openai.base_urls in the config (e.g. http://host:8000/v1)")
        for url in o.base_urls:
            if not url.startswith(("http://", "https://")):
                raise UserError(f"openai.base_urls: {url!r} is not an http(s) URL")
        self.config = config
        self.default_max_tokens = config.sampling.max_tokens
        self.model = o.served_model or model
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model, fast_only=False)
        self.urls = [u.rstrip("/") for u in o.base_urls]
        self._next_url = itertools.count()
        self._lock = threading.Lock()
        headers = {"Content-Type": "application/json"}
        if o.api_key_env:
            key = os.environ.get(o.api_key_env)
            if not key:
                raise UserError(f"openai.api_key_env: environment variable {o.api_key_env} is not set")
            headers["Authorization"] = f"Bearer {key}"
        # One connection per request in flight, at most; keep-alive reuses them across requests.
        limits = httpx.Limits(max_connections=o.concurrency, max_keepalive_connections=o.concurrency)
        self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(o.timeout_s), limits=limits)
        self._pool = cf.ThreadPoolExecutor(max_workers=o.concurrency, thread_name_prefix="ipt-openai")
        self._futures: dict[cf.Future[Completion], str] = {}
        self._ids = itertools.count()

    # -- one request -------------------------------------------------------------------------------

    def _url(self) -> str:
        with self._lock:
            return self.urls[next(self._next_url) % len(self.urls)]

    def _body(self, prompt: Sequence[int], max_tokens: int) -> bytes:
        s = self.config.sampling
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": [int(t) for t in prompt],
            "max_tokens": int(max_tokens),
            "temperature": s.temperature,
            "top_p": s.top_p,
            "n": 1,
            "stream": False,
        }
        if s.temperature > 0:
            body["seed"] = self.config.engine.seed
        return json.dumps(body).encode("utf-8")

    def request(self, prompt: Sequence[int], max_tokens: int) -> Completion:
        """One completion, retried on the next server on transient failures (see the module docstring)."""
        o = self.config.openai
        data = self._body(prompt, max_tokens)
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(o.retries + 1),
            wait=tenacity.wait_exponential(multiplier=0.05, exp_base=2, max=2.0),
            retry=tenacity.retry_if_exception_type(_Transient),
            before_sleep=lambda state: log.debug("openai: attempt %d failed (%s); retrying",
                                                 state.attempt_number,
                                                 state.outcome.exception() if state.outcome else None),
            reraise=True,
        )
        try:
            return retrying(self._attempt, data)
        except _Transient as e:
            raise ServerError(str(e)) from None

    def _attempt(self, data: bytes) -> Completion:
        """One POST to the next server; raise :class:`_Transient` or :class:`ServerError` on failure."""
        url = self._url() + "/completions"
        try:
            resp = self._client.post(url, content=data)
        except httpx.TransportError as e:  # connection refused or reset, timeouts, protocol errors
            raise _Transient(f"{url}: {_one_line(str(e) or type(e).__name__)}") from None
        if resp.status_code >= 400:
            problem = f"{url}: HTTP {resp.status_code} {_one_line(resp.text[:300])}".rstrip()
            if resp.status_code >= 500 or resp.status_code == 429:
                raise _Transient(problem)
            raise ServerError(problem)  # the request itself is bad: retrying will not help
        try:
            return _completion(resp.json())
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise _Transient(f"{url}: not a completions answer ({type(e).__name__}: {_one_line(str(e))})") from None

    # -- batch (round by round) --------------------------------------------------------------------

    def complete(self, prompts: Sequence[Sequence[int]], max_tokens: Sequence[int]) -> list[Completion]:
        """All prompts concurrently; a request the servers fail finishes alone with reason 'error'."""
        futures = [self._pool.submit(self.request, p, m) for p, m in zip(prompts, max_tokens)]
        return [_settle(f) for f in futures]

    # -- request loop (pipelined) ------------------------------------------------------------------

    def submit(self, prompt: Sequence[int], max_tokens: int) -> str:
        request_id = f"ipt-{next(self._ids)}"
        self._futures[self._pool.submit(self.request, prompt, max_tokens)] = request_id
        return request_id

    def poll(self) -> list[tuple[str, Completion]]:
        """Wait until at least one request finishes; a failed request finishes with reason 'error'."""
        if not self._futures:
            return []
        done, _ = cf.wait(list(self._futures), timeout=self.config.openai.timeout_s, return_when=cf.FIRST_COMPLETED)
        return [(self._futures.pop(future), _settle(future)) for future in done]

    @property
    def max_concurrency(self) -> int:
        return self.config.openai.concurrency

    def has_unfinished(self) -> bool:
        return bool(self._futures)

    def abort(self, request_ids: list[str]) -> None:
        drop = set(request_ids)
        for future, request_id in list(self._futures.items()):
            if request_id in drop:
                future.cancel()
                del self._futures[future]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()


def _one_line(text: str) -> str:
    """Whitespace (newlines of an HTML error page, say) collapsed, so an error stays one line."""
    return " ".join(text.split())


def _settle(future: cf.Future[Completion]) -> Completion:
    """The future's completion; a request the servers failed becomes an empty 'error' completion."""
    try:
        return future.result()
    except ServerError:
        return Completion(text="", tokens=0, finish_reason="error")


def _completion(answer: dict[str, Any]) -> Completion:
    """A Completion from an OpenAI completions answer (text, finish reason, usage)."""
    choice = answer["choices"][0]
    usage = answer.get("usage") or {}
    tokens = usage.get("completion_tokens")
    if tokens is None:
        tokens = len(choice.get("token_ids") or []) or 0
    return Completion(text=choice.get("text") or "", tokens=int(tokens), finish_reason=choice.get("finish_reason"))
