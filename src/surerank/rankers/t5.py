"""T5 rerankers on torch (the ``torch`` extra): monoT5 and RankT5, each scored by its published formula.

* ``variant="monot5"`` (Nogueira et al. 2020; castorini/monot5-*): the input ``Query: {query} Document:
  {document} Relevant:``; score = log P("true") under a softmax over the "true" / "false" logits of the
  first decoder step (``true_token`` / ``false_token``, vocabulary entries, default ``▁true`` / ``▁false``).
* ``variant="rankt5"`` (Zhuang et al. 2022, encoder-decoder): the input ``Query: {query} Document:
  {document}``; score = the unnormalised logit of a designated token at the first decoder step
  (``score_token``, default ``<extra_id_10>``).

The variant is an explicit option, never guessed from the model name.  Pairs of all queries of a
``rank_many`` are scored together in batches of similar length.  An input over ``max_length`` tokens loses
the end of its *document* (the prompt's ending, e.g. ``Relevant:``, is kept; the reference cuts the whole
input's tail instead), reported per item.  No ONNX path: a traced export disagreed with torch (docs/llm.md).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from surerank.errors import InputError, MissingDependencyError
from surerank.ranker import Scores, ScoringRanker
from surerank.types import Cost, Query, Truncation

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class T5Variant:
    input_template: str
    formula: str  # "log_p_true" | "token_logit"


VARIANTS: dict[str, T5Variant] = {
    "monot5": T5Variant("Query: {query} Document: {document} Relevant:", "log_p_true"),
    "rankt5": T5Variant("Query: {query} Document: {document}", "token_logit"),
}


class T5Ranker(ScoringRanker):
    """Scores each (query, candidate) with a T5 encoder-decoder's first decoder step (monoT5 / RankT5)."""

    name: ClassVar[str] = "t5-reranker"

    def __init__(self, model: str | None = None, *, variant: str = "monot5", model_obj: Any = None,
                 tokenizer_obj: Any = None, device: str | None = None, dtype: str | None = None,
                 max_length: int = 512, batch_size: int = 16, true_token: str = "▁true",
                 false_token: str = "▁false", score_token: str = "<extra_id_10>",
                 input_template: str | None = None, trust_remote_code: bool = False) -> None:
        if variant not in VARIANTS:
            raise InputError(f"variant: {variant!r} is unknown; choose one of {', '.join(VARIANTS)}")
        if not isinstance(max_length, int) or max_length < 8:
            raise InputError(f"max_length: must be an integer >= 8, got {max_length!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size: must be a positive integer, got {batch_size!r}")
        self.variant = variant
        self.spec = VARIANTS[variant]
        self.input_template = input_template or self.spec.input_template
        for field in ("{query}", "{document}"):
            if field not in self.input_template:
                raise InputError(f"input_template: must contain {field}, got {self.input_template!r}")
        try:
            import torch
            import transformers
        except ImportError as exc:
            raise MissingDependencyError.for_extra("torch/transformers", "torch", "the t5-reranker") from exc
        from surerank.llm.hf import dtype_option, refuse_remote_code

        self._torch = torch
        if model_obj is None or tokenizer_obj is None:
            if model is None:
                raise InputError("model: the t5-reranker needs model= (a hub id or a local folder of a T5 "
                                 "reranker, e.g. castorini/monot5-base-msmarco-10k)")
            refuse_remote_code(model, trust_remote_code)
            options: dict[str, Any] = {"trust_remote_code": trust_remote_code}
            tokenizer_obj = tokenizer_obj or transformers.AutoTokenizer.from_pretrained(model, **options)
            model_obj = model_obj or transformers.AutoModelForSeq2SeqLM.from_pretrained(
                model, **options, **dtype_option(transformers, torch, dtype))
        if not getattr(model_obj.config, "is_encoder_decoder", False):
            raise InputError(f"model: {model or type(model_obj).__name__} is not an encoder-decoder model; the "
                             "t5-reranker needs a T5-style one (for a causal LM reranker use llm-pointwise with "
                             "a template)")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._model = model_obj.to(self.device).eval()
        self._tok = tokenizer_obj
        self.model = model or type(model_obj).__name__
        self.dtype = str(next(self._model.parameters()).dtype).replace("torch.", "")
        self.max_length = max_length
        self.batch_size = batch_size
        self.trust_remote_code = trust_remote_code
        start = self._model.config.decoder_start_token_id
        if start is None:
            raise InputError(f"model: {self.model} has no decoder_start_token_id in its config")
        self._start = int(start)
        if self.spec.formula == "log_p_true":
            self.tokens = {"true_token": true_token, "false_token": false_token}
        else:
            self.tokens = {"score_token": score_token}
        self._token_ids = {key: self._vocab_id(key, token) for key, token in self.tokens.items()}

    def _vocab_id(self, option: str, token: str) -> int:
        token_id = self._tok.convert_tokens_to_ids(token)
        if token_id is None or (token_id == self._tok.unk_token_id and token != self._tok.unk_token):
            raise InputError(f"{option}: the tokenizer has no token {token!r}; set {option}= to a token of this "
                             f"model's vocabulary")
        return int(token_id)

    def describe(self) -> dict[str, Any]:
        return {"ranker": self.name, "model": self.model, "variant": self.variant, "backend": "torch",
                "device": self.device, "dtype": self.dtype, "max_length": self.max_length,
                "input_template": self.input_template, "formula": self.spec.formula, **self.tokens,
                "trust_remote_code": self.trust_remote_code}

    # --- inputs --------------------------------------------------------------------------------------
    def _encode(self, query: str, document: str) -> tuple[list[int], Truncation | None]:
        """Token ids of one pair; when over ``max_length`` the document's end is cut (reported)."""
        def ids_of(doc: str) -> list[int]:
            return list(self._tok(self.input_template.format(query=query, document=doc))["input_ids"])

        ids = ids_of(document)
        if len(ids) <= self.max_length:
            return ids, None
        doc_ids = list(self._tok(document, add_special_tokens=False)["input_ids"])
        keep = len(doc_ids) - (len(ids) - self.max_length)
        while keep > 0:
            ids = ids_of(self._tok.decode(doc_ids[:keep], skip_special_tokens=True))
            if len(ids) <= self.max_length:
                return ids, Truncation(truncated=True, tokens_total=len(doc_ids), tokens_used=keep,
                                       strategy="head")
            keep -= max(1, len(ids) - self.max_length)
        raise InputError(f"query: {len(ids_of(''))} tokens of query and prompt leave no room for a document "
                         f"within max_length={self.max_length}")

    def _first_step_logits(self, rows: list[list[int]]) -> Any:
        torch = self._torch
        width = max(len(r) for r in rows)
        pad = self._tok.pad_token_id if self._tok.pad_token_id is not None else 0
        input_ids = torch.full((len(rows), width), int(pad), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):  # right padding, as the reference tokenizer pads
            input_ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, :len(row)] = 1
        decoder = torch.full((len(rows), 1), self._start, dtype=torch.long)
        with torch.inference_mode():
            out = self._model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                              decoder_input_ids=decoder.to(self.device))
        return out.logits[:, 0, :].float()

    def _formula(self, logits: Any) -> np.ndarray:
        torch = self._torch
        if self.spec.formula == "log_p_true":
            pair = logits[:, [self._token_ids["false_token"], self._token_ids["true_token"]]]
            return torch.log_softmax(pair, dim=-1)[:, 1].cpu().numpy().astype(float)
        return logits[:, self._token_ids["score_token"]].cpu().numpy().astype(float)

    def score(self, queries: list[Query]) -> list[Scores]:
        start = time.perf_counter()
        pairs: list[tuple[int, int, list[int]]] = []
        truncations: list[list[Truncation | None]] = []
        for qi, query in enumerate(queries):
            row = []
            for ci, candidate in enumerate(query.candidates):
                ids, truncation = self._encode(query.text, candidate.text)
                pairs.append((qi, ci, ids))
                row.append(truncation)
            truncations.append(row)
        values = [np.zeros(len(q.candidates)) for q in queries]
        batches_of = [0] * len(queries)
        tokens_of = [0] * len(queries)
        order = sorted(range(len(pairs)), key=lambda k: len(pairs[k][2]))  # similar lengths: less padding
        for begin in range(0, len(order), self.batch_size):
            chunk = [pairs[k] for k in order[begin:begin + self.batch_size]]
            scores = self._formula(self._first_step_logits([ids for _, _, ids in chunk]))
            for (qi, ci, ids), value in zip(chunk, scores):
                values[qi][ci] = float(value)
                tokens_of[qi] += len(ids)
            for qi in {qi for qi, _, _ in chunk}:
                batches_of[qi] += 1
        elapsed = time.perf_counter() - start
        total = max(1, len(pairs))
        out = []
        for qi, query in enumerate(queries):
            share = elapsed * len(query.candidates) / total
            cost = Cost(calls=batches_of[qi], prompt_tokens=tokens_of[qi], rounds=1, latency_s=share)
            n_cut = sum(t is not None for t in truncations[qi])
            if n_cut:
                logger.warning("%s, query %s: %d of %d candidates were over max_length=%d tokens and lost the end "
                               "of their document (item.truncation says how much)", self.name, query.id, n_cut,
                               len(query.candidates), self.max_length)
            out.append(Scores(values=values[qi], truncations=truncations[qi], cost=cost,
                              info={"variant": self.variant, "truncated": n_cut}))
        return out
