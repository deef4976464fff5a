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

Standard library only (``urllib``), so the client runs where neither vLLM nor torch is installed;
``transformers`` is needed for the tokenizer alone.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from ipt_engine.errors import UserError
from ipt_engine.synth.config import SynthConfig
from ipt_engine.synth.engines import Completion, Engine, load_tokenizer


class ServerError(RuntimeError):
    """A server answered with an error, or could not be reached, after the retries."""


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
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model)
        self.urls = [u.rstrip("/") for u in o.base_urls]
        self._next_url = itertools.count()
        self._lock = threading.Lock()
        self._headers = {"Content-Type": "application/json"}
        if o.api_key_env:
            key = os.environ.get(o.api_key_env)
            if not key:
                raise UserError(f"openai.api_key_env: environment variable {o.api_key_env} is not set")
            self._headers["Authorization"] = f"Bearer {key}"
        self._pool = cf.ThreadPoolExecutor(max_workers=o.concurrency, thread_name_prefix="ipt-openai")
        self._futures: dict[cf.Future, str] = {}
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
        """One completion, retried on the next server on connection errors and 5xx answers."""
        o = self.config.openai
        data = self._body(prompt, max_tokens)
        last = "no attempt"
        for attempt in range(o.retries + 1):
            url = self._url() + "/completions"
            req = urllib.request.Request(url, data=data, headers=self._headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=o.timeout_s) as resp:
                    answer = json.loads(resp.read().decode("utf-8"))
                return _completion(answer)
            except urllib.error.HTTPError as e:
                detail = e.read()[:300].decode("utf-8", "replace")
                last = f"{url}: HTTP {e.code} {detail}"
                if e.code < 500 and e.code != 429:
                    raise ServerError(last) from None  # the request itself is bad: retrying will not help
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, ValueError, KeyError) as e:
                last = f"{url}: {e}"
            time.sleep(min(0.05 * 2**attempt, 2.0))
        raise ServerError(last)

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


def _settle(future: cf.Future) -> Completion:
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
