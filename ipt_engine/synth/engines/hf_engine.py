"""Hugging Face transformers engine: batched greedy generation, a fallback where vLLM is absent.

Slower than vLLM (no paged KV cache, no continuous batching: a batch runs until its longest
generation ends), but it needs only torch and transformers, so ``ipt synthesize --engine hf`` works in
the train env or on a laptop. Prompts are token ids with exactly one BOS, left-padded into a batch
with an attention mask, so each row's generation is what the model gives that prompt alone (up to
floating-point differences of padded matmuls).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ipt_engine.data.tokenizer_info import load_tokenizer
from ipt_engine.errors import UserError
from ipt_engine.synth.config import SynthConfig
from ipt_engine.synth.engines import Completion, Engine

_DTYPES = {"auto": None, "float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


class HFEngine(Engine):
    name = "hf"

    def __init__(self, model: str, config: SynthConfig) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM
        except ImportError:
            raise UserError("--engine hf needs torch and transformers") from None
        if config.engine.dtype not in _DTYPES:
            raise UserError(f"engine.dtype {config.engine.dtype!r} is not one of {', '.join(_DTYPES)}")
        self.config = config
        self.default_max_tokens = config.sampling.max_tokens
        self.tokenizer = load_tokenizer(model, fast_only=False)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = _DTYPES[config.engine.dtype]
        kwargs: dict[str, Any] = {"dtype" if _new_transformers() else "torch_dtype": getattr(torch, dtype) if dtype else "auto"}
        try:
            self.model = AutoModelForCausalLM.from_pretrained(model, **kwargs).to(self.device).eval()
        except (OSError, ValueError) as e:
            raise UserError(f"{model}: cannot load the model ({str(e).splitlines()[0]})") from None
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        self.eos_id = self.tokenizer.eos_token_id
        self.max_model_len = config.engine.max_model_len

    def complete(self, prompts: Sequence[Sequence[int]], max_tokens: Sequence[int]) -> list[Completion]:
        if not prompts:
            return []
        for p, m in zip(prompts, max_tokens):
            if len(p) + m > self.max_model_len:
                raise ValueError(f"prompt of {len(p)} tokens + {m} new exceeds max_model_len {self.max_model_len}")
        out: list[Completion] = []
        size = self.config.engine.batch_size
        for start in range(0, len(prompts), size):
            out.extend(self._batch(prompts[start : start + size], max_tokens[start : start + size]))
        return out

    def _batch(self, prompts: Sequence[Sequence[int]], max_tokens: Sequence[int]) -> list[Completion]:
        import torch

        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):
            ids[row, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)  # left padding
            mask[row, width - len(p) :] = 1
        s = self.config.sampling
        greedy = s.temperature == 0
        if not greedy:
            torch.manual_seed(self.config.engine.seed)
        with torch.inference_mode():
            generated = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                max_new_tokens=max(max_tokens),
                do_sample=not greedy,
                temperature=s.temperature if not greedy else None,
                top_p=s.top_p if not greedy else None,
                top_k=None,
                pad_token_id=self.pad_id,
                eos_token_id=self.eos_id,
            )[:, width:].cpu()
        results = []
        for row, limit in enumerate(max_tokens):
            tokens = generated[row, :limit].tolist()
            reason = "length"
            if self.eos_id is not None and self.eos_id in tokens:
                tokens = tokens[: tokens.index(self.eos_id)]
                reason = "stop"
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            results.append(Completion(text=text, tokens=len(tokens) + (reason == "stop"), finish_reason=reason))
        return results

    def close(self) -> None:
        self.model = None


def _new_transformers() -> bool:
    import transformers

    return int(transformers.__version__.split(".")[0]) >= 5
