"""T5 rerankers: monoT5 and RankT5, each scored by its published formula, on ONNX Runtime or torch.

* ``variant="monot5"`` (Nogueira et al. 2020; castorini/monot5-*): the input ``Query: {query} Document:
  {document} Relevant:``; score = log P("true") under a softmax over the "true" / "false" logits of the
  first decoder step (``true_token`` / ``false_token``, vocabulary entries, default ``▁true`` / ``▁false``).
* ``variant="rankt5"`` (Zhuang et al. 2022, encoder-decoder): the input ``Query: {query} Document:
  {document}``; score = the unnormalised logit of a designated token at the first decoder step
  (``score_token``, default ``<extra_id_10>``).

The variant is an explicit option, never guessed from the model name.  ``backend="auto"`` (the default)
runs a named model on ONNX Runtime on a CPU machine: its first decoder step is exported once through torch,
checked against the torch forward pass and cached (:mod:`surerank.engine.onnx.seq2seq`).  It runs on torch
when a GPU is present, a half-precision ``dtype`` is asked, the model is passed as an object, or the
exported graph fails its check (a warning says so, and ``describe()["backend_choice"]``).  Pairs of all
queries of a ``rank_many`` are scored together in batches of similar length.  An input over ``max_length``
tokens loses the end of its *document* (the prompt's ending, e.g. ``Relevant:``, is kept; the reference
cuts the whole input's tail instead), reported per item.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from surerank.engine.checkpoint.locate import resolve_model_dir
from surerank.engine.checkpoint.transformers_load import dtype_option, load_complete, refuse_remote_code
from surerank.engine.onnx.calibration import CALIBRATION_TEXTS
from surerank.engine.onnx.export import ExportParityError
from surerank.engine.onnx.graph_io import available_cpus, cpu_session_options
from surerank.engine.onnx.seq2seq import first_step_graph, padded
from surerank.errors import InputError, MissingDependencyError
from surerank.ranker import Scores, ScoringRanker
from surerank.types import Cost, Query, Truncation

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "onnx", "torch")


@dataclass(frozen=True)
class T5Variant:
    input_template: str
    formula: str  # "log_p_true" | "token_logit"


VARIANTS: dict[str, T5Variant] = {
    "monot5": T5Variant("Query: {query} Document: {document} Relevant:", "log_p_true"),
    "rankt5": T5Variant("Query: {query} Document: {document}", "token_logit"),
}


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


class T5Ranker(ScoringRanker):
    """Scores each (query, candidate) with a T5 encoder-decoder's first decoder step (monoT5 / RankT5)."""

    name: ClassVar[str] = "t5-reranker"

    def __init__(self, model: str | None = None, *, variant: str = "monot5", backend: str = "auto",
                 model_obj: Any = None, tokenizer_obj: Any = None, device: str | None = None,
                 dtype: str | None = None, max_length: int = 512, batch_size: int = 16,
                 threads: int | None = None, true_token: str = "▁true", false_token: str = "▁false",
                 score_token: str = "<extra_id_10>", input_template: str | None = None,
                 trust_remote_code: bool = False) -> None:
        if variant not in VARIANTS:
            raise InputError(f"variant: {variant!r} is unknown; choose one of {', '.join(VARIANTS)}")
        if backend not in BACKENDS:
            raise InputError(f"backend: {backend!r} is unknown to the t5-reranker; choose one of "
                             f"{', '.join(BACKENDS)}")
        if not isinstance(max_length, int) or max_length < 8:
            raise InputError(f"max_length: must be an integer >= 8, got {max_length!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size: must be a positive integer, got {batch_size!r}")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise InputError(f"threads: must be a positive integer, got {threads!r}")
        if not isinstance(trust_remote_code, bool):
            raise InputError(f"trust_remote_code: must be true or false, got {trust_remote_code!r}")
        self.variant = variant
        self.spec = VARIANTS[variant]
        self.input_template = input_template or self.spec.input_template
        for field in ("{query}", "{document}"):
            if field not in self.input_template:
                raise InputError(f"input_template: must contain {field}, got {self.input_template!r}")
        if model_obj is None and model is None:
            raise InputError("model: the t5-reranker needs model= (a hub id or a local folder of a T5 "
                             "reranker, e.g. castorini/monot5-base-msmarco-10k)")
        self.model = model or type(model_obj).__name__
        self.max_length = max_length
        self.batch_size = batch_size
        self.trust_remote_code = trust_remote_code
        self.backend_choice = backend
        auto = backend == "auto"
        if auto:
            if model_obj is not None:
                backend, why = "torch", "the model was passed as a torch object"
            elif dtype not in (None, "float32"):
                backend, why = "torch", f"dtype={dtype} was asked"
            elif (device or "").startswith("cuda") or (device is None and _cuda_available()):
                backend, why = "torch", "a GPU is present"
            else:
                backend, why = "onnx", "CPU"
            logger.info("t5-reranker: backend auto -> %s (%s)", backend, why)
            self.backend_choice = f"auto -> {backend} ({why})"
        #: the ONNX graph's export-time parity record (None on torch)
        self.export: dict[str, Any] | None = None
        self.onnx_path: str | None = None
        if self.spec.formula == "log_p_true":
            self.tokens = {"true_token": true_token, "false_token": false_token}
        else:
            self.tokens = {"score_token": score_token}
        if backend == "onnx":
            self._init_onnx(model, model_obj, tokenizer_obj, device, dtype, threads)
            self._set_columns()
            try:
                self._load_graph()
            except ExportParityError as exc:
                if not auto:
                    raise
                logger.warning("t5-reranker: %s; backend auto -> torch instead", exc)
                backend, self.backend_choice = "torch", f"auto -> torch (the ONNX graph was refused: {exc})"
        if backend == "torch":
            self._init_torch(model, model_obj, tokenizer_obj, device, dtype)
            self._set_columns()
        self.backend = backend

    def _set_columns(self) -> None:
        self._token_ids = {key: self._vocab_id(key, token) for key, token in self.tokens.items()}
        #: the logits a formula reads, in this order: (false, true) for monoT5, (score,) for RankT5
        self._columns = [self._token_ids[k] for k in (
            ("false_token", "true_token") if self.spec.formula == "log_p_true" else ("score_token",))]

    def _init_torch(self, model: str | None, model_obj: Any, tokenizer_obj: Any, device: str | None,
                    dtype: str | None) -> None:
        try:
            import torch
            import transformers
        except ImportError as exc:
            raise MissingDependencyError.for_extra("torch/transformers", "torch", "the t5-reranker") from exc
        self._torch = torch
        if model_obj is None or tokenizer_obj is None:
            if model is None:
                raise InputError("model: the t5-reranker needs model= to load the tokenizer that goes with "
                                 "model_obj (or pass tokenizer_obj too)")
            refuse_remote_code(model, self.trust_remote_code)
            options: dict[str, Any] = {"trust_remote_code": self.trust_remote_code}
            tokenizer_obj = tokenizer_obj or transformers.AutoTokenizer.from_pretrained(model, **options)
            model_obj = model_obj or load_complete(transformers.AutoModelForSeq2SeqLM, model, "the t5-reranker",
                                                   **options, **dtype_option(transformers, torch, dtype))
        self._check_encoder_decoder(model_obj.config)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._model = model_obj.to(self.device).eval()
        self._tok = tokenizer_obj
        self.dtype = str(next(self._model.parameters()).dtype).replace("torch.", "")
        self._start = int(self._model.config.decoder_start_token_id)

    def _init_onnx(self, model: str | None, model_obj: Any, tokenizer_obj: Any, device: str | None,
                   dtype: str | None, threads: int | None) -> None:
        if model_obj is not None or model is None:
            raise InputError("backend: 'onnx' exports the checkpoint named by model= (a local folder or hub id) "
                             "and caches its graph; a model passed as model_obj runs on backend='torch'")
        if device not in (None, "cpu"):
            raise InputError(f"device: the onnx backend runs on the CPU, got {device!r}; use backend='torch' "
                             "for a GPU")
        if dtype not in (None, "float32"):
            raise InputError(f"dtype: the onnx backend runs float32, got {dtype!r}; use backend='torch' for "
                             "bfloat16 / float16")
        for module in ("transformers", "onnxruntime"):
            if importlib.util.find_spec(module) is None:
                raise MissingDependencyError.for_extra(module, "torch", "the t5-reranker")
        import transformers

        self._directory = resolve_model_dir(model)
        refuse_remote_code(str(self._directory), self.trust_remote_code)
        options: dict[str, Any] = {"trust_remote_code": self.trust_remote_code}
        config = transformers.AutoConfig.from_pretrained(str(self._directory), **options)
        self._check_encoder_decoder(config)
        self._tok = tokenizer_obj or transformers.AutoTokenizer.from_pretrained(str(self._directory), **options)
        self.device, self.dtype, self._threads = "cpu", "float32", threads
        self._start = int(config.decoder_start_token_id)

    def _check_encoder_decoder(self, config: Any) -> None:
        if not getattr(config, "is_encoder_decoder", False):
            raise InputError(f"model: {self.model} is not an encoder-decoder model; the t5-reranker needs a "
                             "T5-style one (for a causal LM reranker use llm-pointwise with a template)")
        if getattr(config, "decoder_start_token_id", None) is None:
            raise InputError(f"model: {self.model} has no decoder_start_token_id in its config")

    def _pad_id(self) -> int:
        return int(self._tok.pad_token_id) if self._tok.pad_token_id is not None else 0

    def _load_graph(self) -> None:
        """Export (or reuse) the checked first-step graph and open an ONNX Runtime session on it."""
        import onnxruntime as ort

        texts = list(CALIBRATION_TEXTS)
        calibration = [self._encode(texts[i], texts[(i + 7) % len(texts)])[0] for i in range(len(texts))]
        path, self.export = first_step_graph(Path(self._directory), self._columns, calibration, self._pad_id(),
                                             trust_remote_code=self.trust_remote_code)
        self.onnx_path = str(path)
        self._session = ort.InferenceSession(self.onnx_path, cpu_session_options(self._threads or available_cpus()),
                                             providers=["CPUExecutionProvider"])

    def _vocab_id(self, option: str, token: str) -> int:
        token_id = self._tok.convert_tokens_to_ids(token)
        if token_id is None or (token_id == self._tok.unk_token_id and token != self._tok.unk_token):
            raise InputError(f"{option}: the tokenizer has no token {token!r}; set {option}= to a token of this "
                             f"model's vocabulary")
        return int(token_id)

    def describe(self) -> dict[str, Any]:
        info = {"ranker": self.name, "model": self.model, "variant": self.variant, "backend": self.backend,
                "backend_choice": self.backend_choice, "device": self.device, "dtype": self.dtype,
                "max_length": self.max_length, "input_template": self.input_template,
                "formula": self.spec.formula, **self.tokens, "trust_remote_code": self.trust_remote_code}
        if self.backend == "onnx":
            info["onnx_path"] = self.onnx_path
            info["export_parity"] = (self.export or {}).get("parity")
        return info

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

    def _formula_logits(self, rows: list[list[int]]) -> np.ndarray:
        """The first decoder step's logits of the formula's tokens (``self._columns``), ``[len(rows), k]``."""
        feed = padded(rows, self._pad_id())
        if self.backend == "onnx":
            return np.asarray(self._session.run(None, feed)[0], dtype=np.float64)
        torch = self._torch
        decoder = torch.full((len(rows), 1), self._start, dtype=torch.long)
        with torch.inference_mode():
            out = self._model(input_ids=torch.from_numpy(feed["input_ids"]).to(self.device),
                              attention_mask=torch.from_numpy(feed["attention_mask"]).to(self.device),
                              decoder_input_ids=decoder.to(self.device))
        return out.logits[:, 0, self._columns].float().cpu().numpy().astype(np.float64)

    def _formula(self, logits: np.ndarray) -> np.ndarray:
        if self.spec.formula == "log_p_true":  # log softmax over (false, true), the true entry
            return logits[:, 1] - np.logaddexp(logits[:, 0], logits[:, 1])
        return logits[:, 0]

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
            scores = self._formula(self._formula_logits([ids for _, _, ids in chunk]))
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
                              info={"variant": self.variant, "truncated": n_cut, "backend": self.backend,
                                    "backend_choice": self.backend_choice}))
        return out
