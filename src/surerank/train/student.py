"""The student and its trainer, on sentence-transformers' trainers and losses (no hand-written loop).

torch, transformers, datasets and sentence-transformers are imported inside the functions (``surerank[train]``):
``import surerank.train`` stays light.  A cross-encoder seeded from a checkpoint with no classification head
(a bi-encoder) gets a fresh, randomly initialised head: said in the log and recorded on the card.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from surerank.engine.checkpoint.training_run import MEMORISED, NOT_FITTING
from surerank.errors import MissingDependencyError
from surerank.formats import Qrels
from surerank.train.config import TrainConfig
from surerank.trust.labels import ndcg_from_qrels
from surerank.types import Query

logger = logging.getLogger(__name__)

TRAIN_EXTRA = "pip install 'surerank[train]'"


def require_training_libraries() -> None:
    """Fail early, naming the extra, when the training libraries are not installed."""
    try:
        import accelerate  # noqa: F401
        import datasets  # noqa: F401
        import sentence_transformers  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        raise MissingDependencyError(f"training needs torch, sentence-transformers, datasets and accelerate "
                                     f"({e.name} is missing): {TRAIN_EXTRA}") from e


def has_classifier(folder: Path) -> bool:
    """Whether a checkpoint was saved with a sequence-classification head (config.json ``architectures``)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return any(str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or [])


def load_student(config: TrainConfig, folder: Path) -> tuple[Any, bool]:
    """The student model from ``folder``, and whether its classification head is new."""
    if config.student == "cross-encoder":
        from sentence_transformers.cross_encoder import CrossEncoder

        seeded = not has_classifier(folder)
        if seeded:
            logger.warning("student: %s has no classification head (a bi-encoder or bare encoder); the "
                           "cross-encoder starts with a fresh, randomly initialised head", folder)
        model = CrossEncoder(str(folder), num_labels=1, max_length=config.max_length)
    else:
        from sentence_transformers import SentenceTransformer

        model, seeded = SentenceTransformer(str(folder), device="cpu" if not _cuda() else None), False
        model.max_seq_length = config.max_length
    if not config.dropout:
        without_dropout(model)
    return model, seeded


def without_dropout(model: Any) -> None:
    """Keep ``model`` in eval mode while it trains, so every dropout is off: the layers' and the attention's,
    whatever the architecture's config calls them (no key is guessed).  Gradients flow as in train mode; the
    trainer's ``model.train()`` calls, and a parent module's, reach this override."""
    import types

    def stay_in_eval(self: Any, mode: bool = True) -> Any:
        return type(self).train(self, False)

    model.train = types.MethodType(stay_in_eval, model)
    model.eval()


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def make_loss(config: TrainConfig, model: Any) -> Any:
    """The sentence-transformers loss object for ``config.loss``."""
    if config.student == "cross-encoder":
        from sentence_transformers.cross_encoder import losses as ce

        # bce-mix: BCE takes soft targets in [0, 1] as they are; RankNet reads only the labels' order
        return {"mse": lambda: ce.MSELoss(model), "listnet": lambda: ce.ListNetLoss(model),
                "ranknet": lambda: ce.RankNetLoss(model), "bce": lambda: ce.BinaryCrossEntropyLoss(model),
                "bce-mix": lambda: ce.BinaryCrossEntropyLoss(model)}[str(config.loss)]()
    from sentence_transformers.sentence_transformer import losses as st
    from sentence_transformers.util import pairwise_cos_sim

    # cosine, as the embedding ranker scores: the student learns the similarity it is served with
    return {"kl": lambda: st.DistillKLDivLoss(model, similarity_fct=pairwise_cos_sim,
                                              temperature=config.temperature,
                                              teacher_temperature=config.teacher_temperature),
            "margin-mse": lambda: st.MarginMSELoss(model, similarity_fct=pairwise_cos_sim),
            "embedding-mse": lambda: st.MSELoss(model),
            "mnrl": lambda: st.MultipleNegativesRankingLoss(model)}[str(config.loss)]()


def student_scores(model: Any, student: str, queries: Sequence[Query], batch_size: int = 32) -> list[np.ndarray]:
    """The student's raw score of every candidate of each query, with its torch model (logits; cosines)."""
    import torch

    if student == "cross-encoder":
        pairs = [(q.text, c.text) for q in queries for c in q.candidates]
        flat = np.asarray(model.predict(pairs, batch_size=batch_size, activation_fn=torch.nn.Identity(),
                                        show_progress_bar=False), dtype=np.float64).reshape(-1)
    else:
        qv = model.encode([q.text for q in queries], batch_size=batch_size, convert_to_numpy=True,
                          normalize_embeddings=True, show_progress_bar=False)
        texts = [c.text for q in queries for c in q.candidates]
        dv = model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                          show_progress_bar=False)
        owner = np.repeat(np.arange(len(queries)), [len(q.candidates) for q in queries])
        flat = np.einsum("ij,ij->i", dv, qv[owner]).astype(np.float64)
    out, start = [], 0
    for q in queries:
        out.append(flat[start:start + len(q.candidates)])
        start += len(q.candidates)
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); 0 where either side is constant (scipy says nan)."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def dev_figures(scores: Sequence[np.ndarray], queries: Sequence[Query], teacher: Mapping[str, Mapping[str, float]]
                | None, qrels: Qrels | None) -> dict[str, float]:
    """Dev figures of one set of student scores: rank correlation with the teacher, nDCG@10 on judgments, and
    the spread of scores within a list (what collapse detection reads)."""
    finite = all(np.isfinite(s).all() for s in scores)
    figures: dict[str, float] = {"finite": float(finite),
                                 "score_spread": float(np.median([np.std(s) for s in scores])) if finite else 0.0}
    if teacher is not None and finite:
        figures["spearman_teacher"] = float(np.mean([
            spearman(s, np.array([teacher[q.id][c.id] for c in q.candidates])) for s, q in zip(scores, queries)]))
    if qrels is not None and finite:
        judged = [(s, q) for s, q in zip(scores, queries) if q.id in qrels]
        if judged:
            figures["ndcg@10"] = float(np.mean([
                ndcg_from_qrels([q.candidates[i].id for i in np.argsort(-s, kind="stable")], qrels[q.id])
                for s, q in judged]))
    return figures


def collapse_reason(figures: Mapping[str, float], tol: float, loss: str, train_losses: Sequence[float]) -> str | None:
    """Why this training collapsed (None when it did not): scores not finite, constant within the dev lists,
    or a BCE loss stuck at ln 2 (every pair at probability 1/2: the model learnt nothing)."""
    if not figures.get("finite", 1.0):
        return "dev scores are not finite (NaN/inf): the weights diverged"
    if figures["score_spread"] <= tol:
        return (f"dev scores are constant within each list (median spread {figures['score_spread']:.2e} "
                f"<= {tol:g}): the student no longer tells passages apart")
    recent = list(train_losses)[-3:]
    if loss == "bce" and len(recent) == 3 and all(abs(v - math.log(2)) < 0.01 for v in recent):
        return f"training loss stuck at ln 2 ({', '.join(f'{v:.4f}' for v in recent)}): every pair scored 1/2"
    return None


def fit_verdict(loss_before: float, loss_after: float, worse_on_dev: bool) -> str | None:
    """What the loss on a fixed sample of the training lists, before and after training, says of the run:
    ``"not_fitting"`` (the kept model fits its own training lists no better than the untrained student: the
    learning rate is likely too high, or the steps too few), ``"memorised"`` (it fits them, yet is worse on the
    held-out dev lists: it learnt those queries, not the teacher; more queries help) or None."""
    if not (math.isfinite(loss_before) and math.isfinite(loss_after)):
        return None
    if loss_after >= loss_before:
        return NOT_FITTING
    return MEMORISED if worse_on_dev else None


__all__ = ["TRAIN_EXTRA", "collapse_reason", "dev_figures", "fit_verdict", "has_classifier", "load_student",
           "make_loss", "require_training_libraries", "spearman", "student_scores"]
