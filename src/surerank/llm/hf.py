"""Causal LMs in-process through transformers + torch (the ``torch`` extra), imported lazily.

The same contract as the llama.cpp backend: label log-probabilities from the logits after the prompt,
query likelihood from one forward pass over prefix + query, generated text otherwise (greedy at
temperature 0, sampled above it, cut at the request's stop sequences).  Takes a hub id or a
local folder (``model``), or an already-built model and tokenizer (``model_obj``, ``tokenizer_obj``).

Named reranker templates (:mod:`surerank.llm.templates`) are scored by their published formula from the raw
next-token logits, in left-padded batches of ``batch_size`` prompts (position ids follow the padding, so a
batched score equals the unbatched one).  A model whose repository ships its own Python code (``auto_map``)
is refused unless ``trust_remote_code=True``: never transformers' interactive ``[y/N]`` prompt.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from surerank.engine.checkpoint.transformers_load import dtype_option, load_complete, refuse_remote_code
from surerank.errors import InputError, MissingDependencyError
from surerank.llm.backend import LLMBackend, continuation_start, exception_cause
from surerank.llm.cache import JudgmentCache
from surerank.llm.templates import RerankTemplate, get_template
from surerank.llm.types import LLMRequest, LLMResponse

logger = logging.getLogger(__name__)


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """The text before the earliest stop sequence, which is left out (as the OpenAI API and llama.cpp do)."""
    ends = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return text[:min(ends)] if ends else text


class TransformersBackend(LLMBackend):
    """``thinking``: None leaves the chat template's default; False/True passes ``enable_thinking`` to it
    (Qwen3-style templates).  ``batch_size``: template prompts scored per forward pass."""

    name = "transformers"

    def __init__(self, model: str | None = None, *, model_obj: Any = None, tokenizer_obj: Any = None,
                 device: str = "cpu", dtype: str | None = None, max_length: int | None = None,
                 cache: JudgmentCache | str | None = None, thinking: bool | None = None,
                 trust_remote_code: bool = False, batch_size: int = 8) -> None:
        try:
            import torch
            import transformers
        except ImportError as exc:
            raise MissingDependencyError.for_extra("torch/transformers", "torch", "the transformers backend") from exc
        if thinking is not None and not isinstance(thinking, bool):
            raise InputError(f"thinking: must be true, false or null, got {thinking!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size: must be a positive integer, got {batch_size!r}")
        self._torch = torch
        if model_obj is None or tokenizer_obj is None:
            if model is None:
                raise InputError("model: the transformers backend needs model= (a hub id or a local folder)")
            refuse_remote_code(model, trust_remote_code)
            options: dict[str, Any] = {"trust_remote_code": trust_remote_code}
            tokenizer_obj = tokenizer_obj or transformers.AutoTokenizer.from_pretrained(model, **options)
            model_obj = model_obj or load_complete(transformers.AutoModelForCausalLM, model, "the transformers backend",
                                                   **options, **dtype_option(transformers, torch, dtype))
        super().__init__(model=model or type(model_obj).__name__, concurrency=1, cache=cache)
        self._model = model_obj.to(device).eval()
        self._tok = tokenizer_obj
        self.device = device
        self.thinking = thinking
        self.trust_remote_code = trust_remote_code
        self.batch_size = batch_size
        self.max_length = int(max_length or getattr(self._model.config, "max_position_embeddings", 4096))
        self._lock = threading.Lock()
        self._label_ids: dict[str, list[int]] = {}
        self._template_ids: dict[str, list[int]] = {}
        try:
            self._keeps_logits = "logits_to_keep" in inspect.signature(self._model.forward).parameters
        except (TypeError, ValueError):
            self._keeps_logits = False

    def cache_extra(self) -> dict[str, Any]:
        return {"thinking": self.thinking} if self.thinking is not None else {}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "device": self.device, "max_length": self.max_length,
                "thinking": self.thinking, "trust_remote_code": self.trust_remote_code}

    def format(self, request: LLMRequest) -> str:
        if request.prompt is not None:
            return request.prompt
        messages = request.message_dicts()
        if getattr(self._tok, "chat_template", None):
            extra = {"enable_thinking": self.thinking} if self.thinking is not None else {}
            return self._tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **extra)
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

    # --- named templates ---------------------------------------------------------------------------
    def check_template(self, template: RerankTemplate) -> None:
        """Refuse a template whose label tokens this tokenizer does not have (the wrong model for it)."""
        self._template_label_ids(template)
        if template.add_bos and self._tok.bos_token_id is None:
            raise InputError(f"template {template.name}: the prompt starts with a BOS token, but this tokenizer "
                             "has none: is this the model the template is for?")

    def _template_label_ids(self, template: RerankTemplate) -> list[int]:
        if template.name not in self._template_ids:
            ids = []
            for label in template.labels:
                if template.label_lookup == "vocab":
                    token_id = self._tok.convert_tokens_to_ids(label)
                    unknown = token_id is None or (token_id == self._tok.unk_token_id and label != self._tok.unk_token)
                else:
                    encoded = self._tok(label, add_special_tokens=False)["input_ids"]
                    token_id = int(encoded[0]) if encoded else None
                    unknown = token_id is None
                if unknown:
                    raise InputError(f"template {template.name}: the tokenizer has no token {label!r}; is this "
                                     "the model the template is for?")
                ids.append(int(token_id))
            self._template_ids[template.name] = ids
        return self._template_ids[template.name]

    def template_ids(self, request: LLMRequest) -> list[int]:
        """The token ids of a template prompt: each piece tokenized on its own, as the reference does."""
        template = get_template(request.template or "")
        ids = [int(self._tok.bos_token_id)] if template.add_bos else []
        for piece in request.pieces:
            ids.extend(int(i) for i in self._tok(piece, add_special_tokens=False)["input_ids"])
        return ids

    def _forward_last(self, rows: Sequence[list[int]]) -> Any:
        """Next-token logits after each row, rows left-padded into one batch (float32, [rows, vocab])."""
        torch = self._torch
        width = max(len(r) for r in rows)
        pad = self._tok.pad_token_id if self._tok.pad_token_id is not None else 0
        input_ids = torch.full((len(rows), width), int(pad), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        # only the last position's logits: a full [batch, length, vocab] matrix of a 150k vocabulary is GBs
        options: dict[str, Any] = {"logits_to_keep": 1} if self._keeps_logits else {}
        with torch.inference_mode():
            out = self._model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                              position_ids=positions.to(self.device), **options)
        return out.logits[:, -1, :].float()

    def _template_responses(self, requests: Sequence[LLMRequest], slots: bool = True) -> list[LLMResponse]:
        """Score template requests in batches; a batch that raises fails each of its calls with the cause.
        ``slots=False``: the caller already holds a concurrency slot (``_generate_one`` under ``_call``)."""
        torch = self._torch
        responses: list[LLMResponse | None] = [None] * len(requests)
        prepared: list[tuple[int, list[int]]] = []
        for i, request in enumerate(requests):
            ids = self.template_ids(request)
            if len(ids) + 1 > self.max_length:
                responses[i] = LLMResponse(error=f"prompt of {len(ids)} tokens does not fit max_length="
                                                 f"{self.max_length}; lower max_words", cause="context_overflow")
            else:
                prepared.append((i, ids))
        prepared.sort(key=lambda item: len(item[1]))  # similar lengths together: less padding
        for start in range(0, len(prepared), self.batch_size):
            batch = prepared[start:start + self.batch_size]
            began = time.perf_counter()
            try:
                with self._slots if slots else contextlib.nullcontext(), self._lock:
                    logits = self._forward_last([ids for _, ids in batch])
                    results = []
                    for row, (i, ids) in enumerate(batch):
                        t = get_template(requests[i].template or "")
                        label_ids = self._template_label_ids(t)
                        values = {label: float(logits[row, tid]) for label, tid in zip(t.labels, label_ids)}
                        logprobs = torch.log_softmax(logits[row], dim=-1)
                        first = {label: float(logprobs[tid]) for label, tid in zip(t.labels, label_ids)}
                        results.append((i, ids, t, values, first))
            except Exception as exc:  # every failure becomes a counted failed call
                logger.debug("%s template batch failed: %s", self.name, exc)
                for i, _ in batch:
                    responses[i] = LLMResponse(error=f"{type(exc).__name__}: {exc}", cause=exception_cause(exc))
                continue
            elapsed = (time.perf_counter() - began) / len(batch)
            for i, ids, t, values, first in results:
                best = max(values, key=values.__getitem__)
                responses[i] = LLMResponse(
                    text=best, raw_text=best, prompt_tokens=len(ids), completion_tokens=0,
                    first_token_logprobs=first, latency_s=elapsed,
                    info={"score": t.score(values), "label_logits": values, "text_from": "template"})
        return [r if r is not None else LLMResponse(error="not scored", cause="error") for r in responses]

    def generate(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        """Template requests are scored in batches (cache first); the others answered one by one."""
        if not any(r.template for r in requests):
            return super().generate(requests)
        out: list[LLMResponse | None] = [None] * len(requests)
        plain = [i for i, r in enumerate(requests) if not r.template]
        for i, response in zip(plain, super().generate([requests[i] for i in plain])):
            out[i] = response
        todo: list[int] = []
        keys: dict[int, str] = {}
        for i, request in enumerate(requests):
            if not request.template:
                continue
            if self.cache is not None:
                keys[i] = request.cache_key(self.model, self.cache_extra())
                hit = self.cache.get(keys[i])
                if hit is not None:
                    out[i] = hit
                    continue
            todo.append(i)
        for i, response in zip(todo, self._template_responses([requests[i] for i in todo])):
            if self.cache is not None and response.ok:
                self.cache.put(keys[i], response)
            out[i] = response
        return [r for r in out if r is not None]

    # --- the generic contract ----------------------------------------------------------------------
    def _generate_one(self, request: LLMRequest) -> LLMResponse:
        torch = self._torch
        if request.template:
            return self._template_responses([request], slots=False)[0]
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
            # temperature 0 decodes greedily; above it samples (top-k 40, as the llama.cpp backend does)
            sampling = {"do_sample": True, "temperature": request.temperature, "top_k": 40} \
                if request.temperature > 0 else {"do_sample": False}
            if request.stop:  # stop early; the text is still cut below (generate keeps the stop string)
                sampling |= {"stop_strings": list(request.stop), "tokenizer": self._tok}
            with torch.inference_mode():
                out = self._model.generate(torch.tensor([ids], device=self.device), **sampling,
                                           max_new_tokens=request.max_tokens,
                                           pad_token_id=self._tok.pad_token_id or self._tok.eos_token_id)
        new = out[0][len(ids):].tolist()
        text = cut_at_stop(self._tok.decode(new, skip_special_tokens=True), request.stop)
        return LLMResponse(text=text, raw_text=text, prompt_tokens=len(ids), completion_tokens=len(new))

    def _continuation_logprob(self, prefix: str, continuation: str) -> LLMResponse:
        prefix_ids = self._ids(prefix)
        full = self._ids(prefix + continuation)
        if len(full) > self.max_length:
            return LLMResponse(error=f"{len(full)} tokens do not fit max_length={self.max_length}",
                               cause="context_overflow")
        k = continuation_start(prefix_ids, full)
        # a tokenizer that appends an end marker ([SEP], </s>) puts it after the prefix too: skip it
        end = len(full)
        while end > k and full[end - 1] in set(getattr(self._tok, "all_special_ids", [])):
            end -= 1
        with self._lock:
            logprobs = self._logprobs(full)
        total = float(sum(logprobs[i - 1, full[i]] for i in range(k, end)))
        return LLMResponse(prompt_tokens=len(full), info={"logprob": total, "tokens": end - k})
