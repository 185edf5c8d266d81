"""Train a reranker on the user's lists: a teacher's scores and/or judgments, a dev split, a model folder with a
training card that ``Reranker("embedding" | "cross-encoder", model=DIR)`` loads on the default backend.

The loop is sentence-transformers' (``SentenceTransformerTrainer`` / ``CrossEncoderTrainer``): checkpoints at
each evaluation, resumed from the last one when the run is started again after a kill, the checkpoint with the
best dev figure kept, early stopping.  A collapsed student (dev scores not finite or constant within each list,
BCE stuck at ln 2) is not saved: :class:`TrainingCollapsedError` says why, and ``training_result.json`` in the work
folder records it.  The loss on a fixed sample of the training lists, before and after, tells a learning rate too
high (the student does not fit even its own lists) from memorising (it fits them, and dev does not improve).
"""

from __future__ import annotations

import importlib.metadata
import logging
import random
import resource
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from surerank.engine.checkpoint.card import TrainingCard
from surerank.engine.checkpoint.locate import resolve_model_dir
from surerank.engine.checkpoint.training_run import MEMORISED, NOT_FITTING, RESULT_FILE
from surerank.errors import InputError, SureRankError
from surerank.formats import Qrels, read_qrels
from surerank.storage import atomic_write_json, publish_folder, require_empty_folder
from surerank.train.calibrate import calibrate_saved, held_out_lists
from surerank.train.config import TrainConfig
from surerank.train.embedding_targets import TrainingTexts, align, teacher_vectors, vector_cache_beside
from surerank.train.examples import (
    EMBEDDING_LOSS,
    LOSSES,
    Examples,
    judgment_examples,
    labels_from_teacher,
    mixed_examples,
    split_queries,
    teacher_examples,
)
from surerank.train.hooks import collapse_watch, dev_evaluator, replace_printing, step_timer, training_arguments
from surerank.train.student import (
    collapse_reason,
    dev_figures,
    fit_verdict,
    load_student,
    make_loss,
    require_training_libraries,
    student_scores,
)
from surerank.train.teacher import TeacherScores, score_with_teacher
from surerank.types import Query

logger = logging.getLogger(__name__)

FIT_SAMPLE_PAIRS = 1024  # about this many (query, passage) pairs of the training examples: the fit check


class TrainingCollapsedError(SureRankError):
    """The student collapsed; no model was saved.  ``result`` is what ``training_result.json`` holds."""

    def __init__(self, reason: str, result: dict[str, Any]):
        super().__init__(f"training collapsed: {reason}; no model saved (see {result.get('result_file')})")
        self.reason = reason
        self.result = result


@dataclass
class TrainResult:
    output: Path
    card: TrainingCard


def peak_rss_mb() -> float:
    """This process's peak resident memory, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def library_versions() -> dict[str, str]:
    out = {}
    for name in ("surerank", "torch", "transformers", "sentence-transformers", "accelerate", "datasets"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _cut(queries: Sequence[Query], n: int) -> tuple[list[Query], int]:
    """Each list cut to its first ``n`` first-stage candidates, and how many lists were cut."""
    cut = [replace(q, candidates=tuple(q.candidates[:n])) if len(q.candidates) > n else q for q in queries]
    return cut, sum(len(q.candidates) > n for q in queries)


def _examples(config: TrainConfig, queries: Sequence[Query], labels: dict[str, dict[str, float]] | None,
              teacher: TeacherScores | None, qrels: Qrels | None, seed: int) -> Examples:
    """One split's examples from what the loss learns: the teacher's labels (:func:`labels_from_teacher`),
    judgments (the teacher's scores, if any, only set the mining margin), or both (bce-mix)."""
    if config.label_source == "teacher":
        assert labels is not None
        return teacher_examples(config.student, str(config.loss), queries, labels, seed, config.pairs_per_query)
    if config.label_source == "both":
        assert labels is not None and qrels is not None
        return mixed_examples(queries, labels, qrels, config.relevance_level, config.judgment_weight)
    assert qrels is not None
    return judgment_examples(config.student, str(config.loss), queries, qrels, seed, config.negatives,
                             config.margin, teacher.scores if teacher else None)


def _prepare(config: TrainConfig, queries: Sequence[Query], train_only: Sequence[Query] = ()) -> dict[str, Any]:
    """Everything before torch: lists cut, teacher scores (cached), judgments, the split, the examples (for
    embedding-mse, the texts and the teacher's vectors: the targets need the student, :func:`_embedding_examples`)."""
    require_empty_folder(config.output, "output")
    lists, cut = _cut(queries, config.candidates)
    extra, extra_cut = _cut(train_only, config.candidates)
    cut += extra_cut
    if cut:
        logger.info("%d of %d lists cut to their first %d candidates (--candidates)", cut, len(lists) + len(extra),
                    config.candidates)
    train_q, dev_q = split_queries(lists, config.dev_fraction, config.seed)
    train_q += extra  # never held out: the dev split is made of the user's own lists
    embedding = config.loss == EMBEDDING_LOSS
    # embedding-mse learns vectors: the teacher scores only the dev lists, which dev figures compare with
    scored = dev_q if embedding else lists + extra
    teacher = score_with_teacher(config.teacher, scored, Path(str(config.teacher_cache)),
                                 whole_lists=config.teacher_labels == "order") if config.teacher is not None else None
    labels, label_info = (labels_from_teacher(scored, teacher.scores, teacher.orders, config.teacher_labels,
                                              str(config.loss))
                          if teacher is not None and config.label_source != "judgments" else (None, None))
    qrels = read_qrels(config.qrels) if config.qrels is not None else None
    texts = vectors = None
    if embedding:
        texts = {"train": TrainingTexts.of(train_q)}
        texts["dev"] = TrainingTexts.of(dev_q, exclude=texts["train"])
        cache = vector_cache_beside(Path(str(config.teacher_cache)))
        vectors = {split: teacher_vectors(config.teacher, t, cache) for split, t in texts.items()}
        train = Examples({}, len(train_q), len(texts["train"]))
        dev = Examples({}, len(dev_q), len(texts["dev"]))
    else:
        train = _examples(config, train_q, labels, teacher, qrels, config.seed)
        dev = _examples(config, dev_q, labels, teacher, qrels, config.seed + 1)
    data = {"queries": len(queries), "train_queries": len(train_q), "dev_queries": len(dev_q),
            "dev_ids": [q.id for q in dev_q], "train_examples": len(train), "dev_examples": len(dev),
            "train_pairs_per_epoch": train.pairs, "lists_cut_to_candidates": cut, "candidates": config.candidates,
            "loss": LOSSES[(config.student, str(config.loss))][1]}
    if extra:
        data["train_only_queries"] = len(extra)
    if train.mining is not None:
        data["mining"] = train.mining.as_dict()
    if label_info is not None:  # scores or order, and what the labels are
        data["teacher_labels"] = label_info
    if train.info:  # bce-mix: how many labels came from judgments and from the teacher
        data["label_sources"] = {"train": train.info, "dev": dev.info}
    # what dev Spearman compares with: the teacher's labels (its order, in order mode), else its raw scores
    reference = labels if labels is not None else (teacher.scores if teacher is not None else None)
    return {"lists": lists, "teacher": teacher, "qrels": qrels, "train_q": train_q, "dev_q": dev_q,
            "train": train, "dev": dev, "data": data, "reference": reference, "texts": texts, "vectors": vectors}


def _embedding_examples(config: TrainConfig, model: Any, prep: dict[str, Any]) -> None:
    """embedding-mse: each text's target, the teacher's vector in the student's space (aligned on the training
    texts with the untrained student's vectors), as the ``text`` / ``label`` columns MSELoss reads."""
    prompts = getattr(model, "prompts", None) or {}
    if any(prompts.values()):
        raise InputError(f"loss {EMBEDDING_LOSS}: the student has prompts ({sorted(prompts)}), which this "
                         "loss does not put before its texts yet; use a score loss (kl, margin-mse)")
    texts, vectors = prep["texts"], prep["vectors"]
    own = {split: model.encode(t.queries + t.passages, batch_size=32, convert_to_numpy=True,
                               normalize_embeddings=True, show_progress_bar=False) if len(t) else None
           for split, t in texts.items()}
    train_v = vectors["train"]
    alignment = align(np.concatenate([train_v.queries, train_v.passages]), own["train"])
    start_cosine = 0.0
    for split in ("train", "dev"):
        t, v = texts[split], vectors[split]
        targets = (alignment(np.concatenate([v.queries, v.passages]), own[split], config.embedding_mix)
                   if len(t) else np.zeros((0, 1), np.float32))
        if split == "train":
            start_cosine = float((targets * own[split]).sum(axis=1).mean())
        prep[split].columns = {"text": t.queries + t.passages, "label": [row.tolist() for row in targets]}
        prep["data"][f"{split}_examples"] = len(prep[split])
    prep["data"]["embedding_targets"] = {
        **alignment.summary(), "mix": config.embedding_mix, "student_mixed_target_cosine_untrained":
        round(start_cosine, 4), "train_texts": len(texts["train"]), "dev_texts": len(texts["dev"]),
        "teacher_vectors": {split: v.summary() for split, v in vectors.items()}}
    logger.info("embedding targets: %d training texts, %d teacher directions kept (%.1f%% of its variance), mix "
                "%g; the untrained student's mean cosine to its targets %.3f (%.3f to the teacher's aligned vectors)",
                len(texts["train"]), alignment.directions.shape[1], 100 * alignment.variance_kept,
                config.embedding_mix, start_cosine, alignment.agreement_before)


def _trainer(config: TrainConfig, model: Any, prep: dict[str, Any], callbacks: Sequence[Any]) -> tuple[Any, Any]:
    """The sentence-transformers trainer for this student, and the collapse watcher it reports to."""
    from datasets import Dataset
    from transformers import EarlyStoppingCallback

    if config.student == "cross-encoder":
        from sentence_transformers.cross_encoder import CrossEncoderTrainer as Trainer
    else:
        from sentence_transformers import SentenceTransformerTrainer as Trainer
    train, dev = prep["train"], prep["dev"]
    steps = max(1, len(train) // (config.batch_size * config.accumulation))
    watch = collapse_watch(config)
    hooks = [watch, *callbacks]
    if config.patience > 0:
        hooks.append(EarlyStoppingCallback(early_stopping_patience=config.patience))
    teacher = prep["reference"]
    trainer = Trainer(model=model, args=training_arguments(config, steps),
                      train_dataset=Dataset.from_dict(train.columns), eval_dataset=Dataset.from_dict(dev.columns),
                      loss=make_loss(config, model), callbacks=hooks,
                      evaluator=dev_evaluator(config.student, prep["dev_q"], teacher, prep["qrels"]))
    replace_printing(trainer, config.progress)
    return trainer, watch


def _last_checkpoint(config: TrainConfig) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    folder = Path(str(config.work_dir)) / "checkpoints"
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def train_model(config: TrainConfig, queries: Sequence[Query], callbacks: Sequence[Any] = (),
                train_only: Sequence[Query] = ()) -> TrainResult:
    """Train ``config.student`` on ``queries`` (first-stage lists) and save it with its card in
    ``config.output``; raises :class:`TrainingCollapsedError` (nothing saved) when the student collapses.
    ``train_only``: more lists (e.g. unlabeled queries over the same passages) used for training only, never held
    out for the dev split."""
    require_training_libraries()
    from transformers import set_seed

    started = time.perf_counter()
    held = held_out_lists(config.calibrate, queries, config.dev_fraction, config.seed) if config.calibrate else None
    prep = _prepare(config, queries, train_only)
    base = resolve_model_dir(config.base_model)
    set_seed(config.seed)
    model, seeded = load_student(config, base)
    if prep["texts"] is not None:
        _embedding_examples(config, model, prep)
    teacher = prep["reference"]
    base_figures = dev_figures(student_scores(model, config.student, prep["dev_q"]), prep["dev_q"], teacher,
                               prep["qrels"])
    # the teacher's own dev figures: the ceiling the report sets the student beside
    teacher_figures = dev_figures([np.array([teacher[q.id][c.id] for c in q.candidates]) for q in prep["dev_q"]],
                                  prep["dev_q"], teacher, prep["qrels"]) if teacher is not None else None
    timer = step_timer()
    trainer, watch = _trainer(config, model, prep, [timer, *callbacks])
    resume = _last_checkpoint(config)
    fit_sample = _fit_sample(prep["train"], config.seed)
    fit_before = _loss_on(trainer, fit_sample)  # the untrained student (train() loads any checkpoint after this)
    before = None
    if resume:
        logger.info("resuming from %s", resume)
    else:  # the untrained student's dev loss (train() starts a fresh history, so it is kept here)
        before = {k.removeprefix("eval_"): v for k, v in trainer.evaluate().items()}
    out = trainer.train(resume_from_checkpoint=resume)
    fit_after = _loss_on(trainer, fit_sample)  # the kept model
    final = dev_figures(student_scores(trainer.model, config.student, prep["dev_q"]), prep["dev_q"], teacher,
                        prep["qrels"])
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    reason = watch.reason or collapse_reason(final, config.collapse_tol, str(config.loss), losses)
    dev = _dev_record(trainer, base_figures, before, final, resume) | {"teacher": teacher_figures}
    dev["training_fit"] = _fit_record(fit_before, fit_after, fit_sample, dev["worse_than_base"])
    seconds = time.perf_counter() - started
    card = TrainingCard(
        student=config.student, base_model=str(base), loss=str(config.loss), seed=config.seed,
        epochs=float(trainer.state.epoch or 0), steps=int(trainer.state.global_step), seeded_head=seeded,
        data=prep["data"], teacher=prep["teacher"].summary() if prep["teacher"] else None,
        judgments=str(config.qrels) if config.qrels else None,
        dev=dev,
        schedule=config.schedule(),
        resources={"seconds": round(seconds, 1), "train_seconds": round(out.metrics.get("train_runtime", 0), 1),
                   "step_seconds": round(timer.seconds, 1), "steps_this_run": timer.steps,
                   "pairs_per_s": _pairs_per_s(prep["train"], config, timer),
                   "peak_rss_mb": round(peak_rss_mb(), 1), "threads": _threads()},
        versions=library_versions())
    result = {**card.to_dict(), "status": "collapsed" if reason else "saved", "collapse": reason,
              "result_file": str(Path(str(config.work_dir)) / RESULT_FILE),
              "output": None if reason else str(config.output)}
    atomic_write_json(result["result_file"], result, indent=2)
    if reason:
        raise TrainingCollapsedError(reason, result)
    _save(trainer.model, card, Path(config.output), Path(str(config.work_dir)))
    if held is not None:  # on the saved folder, as it is served: trust.json beside it, recorded on the card
        card = calibrate_saved(held, Path(config.output), card)
    logger.info("saved %s (%s, loss %s, %d steps, dev %s)", config.output, config.student, config.loss,
                card.steps, card.dev.get("final"))
    return TrainResult(Path(config.output), card)


def _dev_record(trainer: Any, base: dict[str, float], before: dict[str, float] | None, final: dict[str, float],
                resume: str | None) -> dict[str, Any]:
    """Dev figures: the untrained student (``before``: its dev loss; None on a resumed run), each evaluation (from
    the trainer's history), the kept model."""
    history = [{k.removeprefix("eval_"): v for k, v in h.items() if k.startswith("eval_") or k in ("step", "epoch")}
               for h in trainer.state.log_history if "eval_loss" in h]
    train_loss = [{"step": h["step"], "loss": h["loss"]} for h in trainer.state.log_history if "loss" in h]
    metric = trainer.args.metric_for_best_model.removeprefix("eval_dev_")
    worse = metric in base and metric in final and final[metric] < base[metric]
    if worse:  # the trainer only chooses among its checkpoints; the untrained student is not one of them
        logger.warning("the kept model's dev %s %.4f is below the untrained student's %.4f: training did not help "
                       "on dev (saved all the same, marked on the card)", metric, final[metric], base[metric])
    return {"base": base, "before_training": before, "final": final, "evaluations": history, "train_loss": train_loss,
            "best_checkpoint": trainer.state.best_model_checkpoint, "best": trainer.state.best_metric,
            "selected_by": trainer.args.metric_for_best_model, "worse_than_base": worse, "resumed_from": resume}


def _fit_sample(train: Examples, seed: int) -> dict[str, list[Any]]:
    """A seeded sample of the training examples, about :data:`FIT_SAMPLE_PAIRS` pairs (a listwise example holds a
    whole list), whose loss is measured on the untrained and on the kept student."""
    per_example = max(1, round(train.pairs / max(1, len(train))))
    n = min(len(train), max(1, FIT_SAMPLE_PAIRS // per_example))
    chosen = sorted(random.Random(seed).sample(range(len(train)), n))
    return {name: [column[i] for i in chosen] for name, column in train.columns.items()}


def _loss_on(trainer: Any, columns: dict[str, list[Any]]) -> float:
    """The training loss of the trainer's current model on these examples, with no dev evaluator, callbacks or
    log entry (it is not an evaluation of the run: early stopping and the history never see it)."""
    from datasets import Dataset

    evaluator, trainer.evaluator = trainer.evaluator, None
    try:
        data = trainer.preprocess_dataset(Dataset.from_dict(columns), dataset_name="eval")
        out = trainer.evaluation_loop(trainer.get_eval_dataloader(data), description="fit check",
                                      prediction_loss_only=True, metric_key_prefix="fit")
    finally:
        trainer.evaluator = evaluator
    return float(out.metrics["fit_loss"])


def _fit_record(before: float, after: float, sample: dict[str, list[Any]], worse_on_dev: bool) -> dict[str, Any]:
    """The fit check on the card, and a warning when it says the run went wrong (:func:`fit_verdict`)."""
    verdict = fit_verdict(before, after, worse_on_dev)
    examples = len(next(iter(sample.values())))
    if verdict == NOT_FITTING:
        logger.warning("the kept student fits its own training lists no better than the untrained one (training "
                       "loss on %d of them %.4g -> %.4g): the learning rate is likely too high (or the steps too "
                       "few); try a lower --lr", examples, before, after)
    elif verdict == MEMORISED:
        logger.warning("the kept student fits its training lists (loss %.4g -> %.4g) but is worse than the "
                       "untrained one on the held-out dev lists: it learnt those queries, not the teacher; more "
                       "queries help, more epochs do not", before, after)
    return {"examples": examples, "loss_before": before, "loss_after": after, "verdict": verdict}


def _pairs_per_s(train: Examples, config: TrainConfig, timer: Any) -> float:
    """Pairs the loss read per second of optimiser steps (evaluations and checkpoints left out), over the steps
    of this run (a resumed run times only its own)."""
    if not timer.seconds or not len(train):
        return 0.0
    pairs_per_step = train.pairs / len(train) * config.batch_size * config.accumulation
    return round(timer.steps * pairs_per_step / timer.seconds, 1)


def _threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _save(model: Any, card: TrainingCard, output: Path, work: Path) -> None:
    """Write the model and its card into a folder beside the work files, then move it to ``output`` whole."""
    staging = work / "final"
    if staging.exists():
        shutil.rmtree(staging)
    model.save_pretrained(str(staging))
    card.save(staging)
    publish_folder(staging, output)


__all__ = ["RESULT_FILE", "TrainResult", "TrainingCollapsedError", "peak_rss_mb", "train_model"]
