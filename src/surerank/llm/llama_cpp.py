"""In-process GGUF models through llama-cpp-python (the ``llama-cpp`` extra), imported lazily.

First-token log-probabilities come straight from the logits after the prompt (no ``logits_all`` matrix),
query likelihood from token-by-token evaluation of the query after the passage prefix, and text from greedy
decoding.  The prompt is formatted with the model's own chat template (from the GGUF metadata) or, for
models without one, a plain ``User:/Assistant:`` layout.  A named reranker template
(:mod:`surerank.llm.templates`) is tokenized piece by piece, as its reference does, and scored by its
published formula from the raw next-token logits.  A prompt longer than the context is an error
reported on that call, never silently cut.  One model, one lock: calls are serialised.

``extra_buffers`` (off by default) lets llama.cpp repack weights into extra CPU buffer types (AMX, AVX
repacks).  It is faster where it works, but on AMX-capable CPUs inside some sandboxes/VMs the AMX path
crashes the process on the first batched decode (seen here with a Q4_1 GGUF); plain buffers always work.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from surerank.errors import InputError, MissingDependencyError
from surerank.llm.backend import LLMBackend, continuation_start
from surerank.llm.cache import JudgmentCache
from surerank.llm.templates import RerankTemplate, get_template
from surerank.llm.types import LLMRequest, LLMResponse

logger = logging.getLogger(__name__)
_PARAMS_LOCK = threading.Lock()


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = x - x.max()
    return x - math.log(float(np.exp(x).sum()))


class LlamaCppBackend(LLMBackend):
    name = "llama-cpp"

    def __init__(self, model_path: str | os.PathLike[str], n_ctx: int = 4096, n_threads: int | None = None,
                 n_batch: int = 512, cache: JudgmentCache | str | None = None, seed: int = 0,
                 chat_template: str | None = "auto", model: str | None = None, extra_buffers: bool = False
                 ) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise InputError(f"model_path: no GGUF file at {str(path)!r}")
        super().__init__(model=model or path.name, concurrency=1, cache=cache)
        try:
            import llama_cpp
        except ImportError as exc:
            raise MissingDependencyError.for_extra("llama-cpp-python", "llama-cpp",
                                                   "the llama-cpp backend") from exc
        self._lib = llama_cpp
        self.model_path = str(path)
        self.n_ctx = int(n_ctx)
        self.extra_buffers = bool(extra_buffers)
        self._llm = self._load(llama_cpp, n_batch=n_batch, n_threads=n_threads, seed=seed)
        self._lock = threading.Lock()
        self._formatter = None
        template = self._llm.metadata.get("tokenizer.chat_template") if chat_template == "auto" else chat_template
        if template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            self._formatter = Jinja2ChatFormatter(template=template, eos_token=self._token_text(self._llm.token_eos()),
                                                  bos_token=self._token_text(self._llm.token_bos()))
        self._label_ids: dict[str, list[int]] = {}
        self._vocab: dict[bytes, int] | None = None  # token text -> id, read when a template needs it

    def _load(self, llama_cpp: Any, **options: Any) -> Any:
        """Build the Llama, with the model's extra buffer types switched off unless asked for.

        llama-cpp-python has no argument for ``use_extra_bufts``; it reads the defaults from
        ``llama_model_default_params`` while constructing, so that function is wrapped for the duration.
        """
        low = llama_cpp.llama_cpp
        with _PARAMS_LOCK:
            original = low.llama_model_default_params

            def params() -> Any:
                p = original()
                if hasattr(p, "use_extra_bufts"):
                    p.use_extra_bufts = self.extra_buffers
                return p

            low.llama_model_default_params = params
            try:
                return llama_cpp.Llama(model_path=self.model_path, n_ctx=self.n_ctx, logits_all=False,
                                       verbose=False, **options)
            finally:
                low.llama_model_default_params = original

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model_path": self.model_path, "n_ctx": self.n_ctx,
                "extra_buffers": self.extra_buffers,
                "chat_template": self._formatter is not None}

    # --- helpers -------------------------------------------------------------------------------------
    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._llm.detokenize([token], special=True).decode("utf-8", errors="replace")

    def format(self, request: LLMRequest) -> tuple[str, list[str]]:
        """The prompt string the model sees and its stop strings."""
        if request.prompt is not None:
            return request.prompt, list(request.stop)
        messages = request.message_dicts()
        if self._formatter is not None:
            formatted = self._formatter(messages=messages)
            stop = formatted.stop if isinstance(formatted.stop, list) else [formatted.stop] if formatted.stop else []
            return formatted.prompt, [*stop, *request.stop]
        text = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages) + "Assistant:"
        return text, ["\nUser:", *request.stop]

    def _tokens(self, text: str) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def _eval_last_logits(self, tokens: list[int]) -> np.ndarray:
        """Evaluate ``tokens`` (reusing the cached common prefix) and return the last position's logits."""
        llm = self._llm
        cached = llm._input_ids.tolist()
        common = 0
        for a, b in zip(cached, tokens):
            if a != b:
                break
            common += 1
        common = min(common, len(tokens) - 1)  # always evaluate at least one token to get fresh logits
        llm.n_tokens = common
        llm.eval(tokens[common:])
        pointer = self._lib.llama_get_logits_ith(llm.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(llm.n_vocab(),)).copy()

    def _label_token_ids(self, label: str) -> list[int]:
        if label not in self._label_ids:
            ids = set()
            plain = self._llm.tokenize(label.encode(), add_bos=False, special=False)
            if plain:
                ids.add(plain[0])
            spaced = self._llm.tokenize((" " + label).encode(), add_bos=False, special=False)
            if len(spaced) == 1:
                ids.add(spaced[0])
            self._label_ids[label] = sorted(ids)
        return self._label_ids[label]

    # --- named templates ---------------------------------------------------------------------------
    def check_template(self, template: RerankTemplate) -> None:
        """Refuse a template whose label tokens this model's vocabulary does not have."""
        self._template_label_ids(template)
        if template.add_bos and self._llm.token_bos() < 0:
            raise InputError(f"template {template.name}: the prompt starts with a BOS token, but this model has "
                             "none: is this the model the template is for?")

    def _template_label_ids(self, template: RerankTemplate) -> list[int]:
        key = "template:" + template.name
        if key not in self._label_ids:
            ids = []
            for label in template.labels:
                if template.label_lookup == "vocab":
                    # the vocabulary entry spelled exactly so (the reference's convert_tokens_to_ids): on a
                    # SentencePiece vocabulary tokenizing "yes" gives "▁yes", another token
                    found = self._vocab_entry(label)
                else:  # the first token of the label's encoding
                    tokens = self._llm.tokenize(label.encode("utf-8"), add_bos=False, special=False)
                    found = int(tokens[0]) if tokens else None
                if found is None:
                    raise InputError(f"template {template.name}: the model's vocabulary has no token {label!r}; "
                                     "is this the model the template is for?")
                ids.append(found)
            self._label_ids[key] = ids
        return self._label_ids[key]

    def _vocab_entry(self, text: str) -> int | None:
        """The id of the vocabulary entry spelled exactly ``text``, or None (the vocabulary is read once)."""
        if self._vocab is None:
            lib, model = self._lib, self._llm.model
            if hasattr(lib, "llama_model_get_vocab"):  # llama.cpp's vocabulary API (llama-cpp-python 0.3.6+)
                vocab = lib.llama_model_get_vocab(model)

                def text_of(i: int) -> bytes:
                    return lib.llama_vocab_get_text(vocab, i)
            else:
                def text_of(i: int) -> bytes:
                    return lib.llama_token_get_text(model, i)
            self._vocab = {}
            for i in range(int(self._llm.n_vocab())):
                self._vocab.setdefault(bytes(text_of(i) or b""), i)
        return self._vocab.get(text.encode("utf-8"))

    def template_tokens(self, request: LLMRequest) -> list[int]:
        """Each piece tokenized on its own (special tokens such as ``<|im_start|>`` parsed), BOS if the
        template starts with one."""
        template = get_template(request.template or "")
        tokens = [int(self._llm.token_bos())] if template.add_bos else []
        for piece in request.pieces:
            tokens.extend(self._llm.tokenize(piece.encode("utf-8"), add_bos=False, special=True))
        return tokens

    def _template_one(self, request: LLMRequest) -> LLMResponse:
        template = get_template(request.template or "")
        with self._lock:
            tokens = self.template_tokens(request)
            if len(tokens) + 1 > self.n_ctx:
                return LLMResponse(error=f"prompt of {len(tokens)} tokens does not fit n_ctx={self.n_ctx}; raise "
                                         "n_ctx or lower max_words", cause="context_overflow")
            logits = self._eval_last_logits(tokens)
        label_ids = self._template_label_ids(template)
        values = {label: float(logits[i]) for label, i in zip(template.labels, label_ids)}
        logprobs = _log_softmax(logits)
        first = {label: float(logprobs[i]) for label, i in zip(template.labels, label_ids)}
        best = max(values, key=values.__getitem__)
        return LLMResponse(text=best, raw_text=best, prompt_tokens=len(tokens), completion_tokens=0,
                           first_token_logprobs=first,
                           info={"score": template.score(values), "label_logits": values, "text_from": "template"})

    # --- backend contract ----------------------------------------------------------------------------
    def _generate_one(self, request: LLMRequest) -> LLMResponse:
        if request.template:
            return self._template_one(request)
        prompt, stop = self.format(request)
        with self._lock:
            tokens = self._tokens(prompt)
            budget = self.n_ctx - max(1, request.max_tokens)
            if len(tokens) > budget:
                return LLMResponse(error=f"prompt of {len(tokens)} tokens does not fit n_ctx={self.n_ctx} with "
                                         f"max_tokens={request.max_tokens}; raise n_ctx or lower max_words",
                                   prompt_tokens=0, cause="context_overflow")
            if request.labels:
                logprobs = _log_softmax(self._eval_last_logits(tokens))
                first: dict[str, float] = {}
                for label in request.labels:
                    ids = self._label_token_ids(label)
                    if ids:
                        first[label] = float(np.logaddexp.reduce(logprobs[ids]))
                best = max(first, key=first.__getitem__) if first else ""
                # the label the model puts most mass on stands in for its (one-token) answer
                return LLMResponse(text=best, raw_text=best, prompt_tokens=len(tokens), completion_tokens=1,
                                   first_token_logprobs=first, info={"text_from": "labels"})
            out = self._llm.create_completion(prompt=tokens, max_tokens=request.max_tokens,
                                              temperature=request.temperature, top_k=1 if request.temperature == 0
                                              else 40, stop=stop or None)
        text = out["choices"][0]["text"]
        usage = out.get("usage") or {}
        return LLMResponse(text=text, raw_text=text, prompt_tokens=int(usage.get("prompt_tokens", len(tokens))),
                           completion_tokens=int(usage.get("completion_tokens", 0)))

    def _continuation_logprob(self, prefix: str, continuation: str) -> LLMResponse:
        with self._lock:
            prefix_tokens = self._tokens(prefix)
            full = self._tokens(prefix + continuation)
            if len(full) > self.n_ctx:
                return LLMResponse(error=f"{len(full)} tokens do not fit n_ctx={self.n_ctx}",
                                   cause="context_overflow")
            k = continuation_start(prefix_tokens, full)
            total = 0.0
            logits = self._eval_last_logits(full[:k])
            for position in range(k, len(full)):
                token = full[position]
                total += float(_log_softmax(logits)[token])
                if position + 1 < len(full):
                    self._llm.eval([token])
                    pointer = self._lib.llama_get_logits_ith(self._llm.ctx, -1)
                    logits = np.ctypeslib.as_array(pointer, shape=(self._llm.n_vocab(),)).copy()
        return LLMResponse(prompt_tokens=len(full), info={"logprob": total, "tokens": len(full) - k})
