"""Causal LMs in-process through transformers + torch (the ``torch`` extra), imported lazily.

The same contract as the llama.cpp backend: label log-probabilities from the logits after the prompt,
query likelihood from one forward pass over prefix + query, greedy text otherwise.  Takes a hub id or a
local folder (``model``), or an already-built model and tokenizer (``model_obj``, ``tokenizer_obj``).
"""

from __future__ import annotations

import threading
from typing import Any

from surerank.errors import MissingDependencyError
from surerank.llm.backend import LLMBackend
from surerank.llm.cache import JudgmentCache
from surerank.llm.types import LLMRequest, LLMResponse


class TransformersBackend(LLMBackend):
    name = "transformers"

    def __init__(self, model: str | None = None, *, model_obj: Any = None, tokenizer_obj: Any = None,
                 device: str = "cpu", dtype: str | None = None, max_length: int | None = None,
                 cache: JudgmentCache | str | None = None) -> None:
        try:
            import torch
            import transformers
        except ImportError as exc:
            raise MissingDependencyError.for_extra("torch/transformers", "torch", "the transformers backend") from exc
        self._torch = torch
        if model_obj is None or tokenizer_obj is None:
            if model is None:
                raise MissingDependencyError("the transformers backend needs model= (a hub id or a local folder)")
            tokenizer_obj = tokenizer_obj or transformers.AutoTokenizer.from_pretrained(model)
            kwargs = {"torch_dtype": getattr(torch, dtype)} if dtype else {}
            model_obj = model_obj or transformers.AutoModelForCausalLM.from_pretrained(model, **kwargs)
        super().__init__(model=model or type(model_obj).__name__, concurrency=1, cache=cache)
        self._model = model_obj.to(device).eval()
        self._tok = tokenizer_obj
        self.device = device
        self.max_length = int(max_length or getattr(self._model.config, "max_position_embeddings", 4096))
        self._lock = threading.Lock()
        self._label_ids: dict[str, list[int]] = {}

    def format(self, request: LLMRequest) -> str:
        if request.prompt is not None:
            return request.prompt
        messages = request.message_dicts()
        if getattr(self._tok, "chat_template", None):
            return self._tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages) + "Assistant:"

    def _ids(self, text: str) -> list[int]:
        return list(self._tok(text, add_special_tokens=True)["input_ids"])

    def _label_token_ids(self, label: str) -> list[int]:
        if label not in self._label_ids:
            ids = set()
            for variant in (label, " " + label):
                encoded = self._tok(variant, add_special_tokens=False)["input_ids"]
                if encoded and (variant == label or len(encoded) == 1):
                    ids.add(int(encoded[0]))
            self._label_ids[label] = sorted(ids)
        return self._label_ids[label]

    def _logprobs(self, ids: list[int]) -> Any:
        torch = self._torch
        with torch.inference_mode():
            logits = self._model(torch.tensor([ids], device=self.device)).logits[0].float()
        return torch.log_softmax(logits, dim=-1)

    def _generate_one(self, request: LLMRequest) -> LLMResponse:
        torch = self._torch
        ids = self._ids(self.format(request))
        if len(ids) + max(1, request.max_tokens) > self.max_length:
            return LLMResponse(error=f"prompt of {len(ids)} tokens does not fit max_length={self.max_length} "
                                     f"with max_tokens={request.max_tokens}", cause="context_overflow")
        with self._lock:
            if request.labels:
                last = self._logprobs(ids)[-1]
                first = {}
                for label in request.labels:
                    token_ids = self._label_token_ids(label)
                    if token_ids:
                        first[label] = float(torch.logsumexp(last[token_ids], dim=0))
                best = max(first, key=first.__getitem__) if first else ""
                return LLMResponse(text=best, raw_text=best, prompt_tokens=len(ids), completion_tokens=1,
                                   first_token_logprobs=first, info={"text_from": "labels"})
            with torch.inference_mode():
                out = self._model.generate(torch.tensor([ids], device=self.device), do_sample=False,
                                           max_new_tokens=request.max_tokens,
                                           pad_token_id=self._tok.pad_token_id or self._tok.eos_token_id)
        new = out[0][len(ids):].tolist()
        text = self._tok.decode(new, skip_special_tokens=True)
        return LLMResponse(text=text, raw_text=text, prompt_tokens=len(ids), completion_tokens=len(new))

    def _continuation_logprob(self, prefix: str, continuation: str) -> LLMResponse:
        prefix_ids = self._ids(prefix)
        full = self._ids(prefix + continuation)
        if len(full) > self.max_length:
            return LLMResponse(error=f"{len(full)} tokens do not fit max_length={self.max_length}",
                               cause="context_overflow")
        k = 0
        while k < min(len(prefix_ids), len(full)) and prefix_ids[k] == full[k]:
            k += 1
        k = max(1, k)
        # a tokenizer that appends an end marker ([SEP], </s>) puts it after the prefix too: skip it
        end = len(full)
        while end > k and full[end - 1] in set(getattr(self._tok, "all_special_ids", [])):
            end -= 1
        with self._lock:
            logprobs = self._logprobs(full)
        total = float(sum(logprobs[i - 1, full[i]] for i in range(k, end)))
        return LLMResponse(prompt_tokens=len(full), info={"logprob": total, "tokens": end - k})
