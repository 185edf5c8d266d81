"""What runs inside the trainer: surerank's dev figures as a sentence-transformers evaluator, collapse watching,
and the training arguments (CPU-sized, resumable, early stopping on dev loss).

The classes subclass sentence-transformers / transformers types, so they are built by functions that import
those libraries on call (``import surerank.train`` loads no torch).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from surerank.formats import Qrels
from surerank.train.config import TrainConfig
from surerank.train.student import collapse_reason, dev_figures, student_scores
from surerank.types import Query

logger = logging.getLogger(__name__)


def dev_evaluator(student: str, queries: Sequence[Query], teacher: Mapping[str, Mapping[str, float]] | None,
                  qrels: Qrels | None) -> Any:
    """An evaluator the trainer calls at each evaluation: the student's figures on the dev lists (rank
    correlation with the teacher, nDCG@10, score spread), logged as ``eval_dev_*`` and kept in checkpoints."""
    from sentence_transformers.base.evaluation.evaluator import BaseEvaluator

    class DevFigures(BaseEvaluator):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.primary_metric = "spearman_teacher" if teacher is not None else "ndcg@10"

        def __call__(self, model: Any, output_path: str | None = None, epoch: float = -1,
                     steps: int = -1) -> dict[str, float]:
            figures = dev_figures(student_scores(model, student, queries), queries, teacher, qrels)
            logger.info("dev at step %s: %s", steps, ", ".join(f"{k} {v:.4f}" for k, v in figures.items()))
            return self.prefix_name_to_metrics(figures, "dev")

    return DevFigures()


def collapse_watch(config: TrainConfig) -> Any:
    """A callback that stops training at the first evaluation whose dev scores have collapsed (the final check in
    :func:`surerank.train.model.train_model` then refuses to save the model)."""
    from transformers import TrainerCallback

    class CollapseWatch(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.reason: str | None = None

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                        **kwargs: Any) -> Any:
            figures = {k.removeprefix("eval_dev_"): v for k, v in (metrics or {}).items()
                       if k.startswith("eval_dev_")}
            losses = [h["loss"] for h in state.log_history if "loss" in h]
            reason = collapse_reason(figures, config.collapse_tol, str(config.loss), losses) if figures else None
            if reason:
                self.reason = reason
                logger.error("collapse at step %d: %s; stopping", state.global_step, reason)
                control.should_training_stop = True
            return control

    return CollapseWatch()


def step_timer() -> Any:
    """A callback summing the wall time of the optimiser steps alone (``seconds``, ``steps``): the trainer's own
    ``train_runtime`` also holds every evaluation and checkpoint, which would understate the training speed."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.seconds = 0.0
            self.steps = 0
            self._began: float | None = None

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._began = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self._began is not None:
                self.seconds += time.perf_counter() - self._began
                self.steps += 1
                self._began = None

    return StepTimer()


def replace_printing(trainer: Any, progress: bool) -> None:
    """The trainer's log lines go to the log (stderr), not stdout, which a command keeps for its JSON; the
    progress bar (stderr) stays when ``progress``."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class LoggedProgress(ProgressCallback):  # type: ignore[misc]
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            logger.info("step %d: %s", state.global_step, logs)

    class Logged(PrinterCallback):  # type: ignore[misc]
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            logger.info("step %d: %s", state.global_step, logs)

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(LoggedProgress() if progress else Logged())


def length_grouped_batches(dataset: Any, batch_size: int, drop_last: bool,
                           valid_label_columns: list[str] | None = None, generator: Any = None, seed: int = 0) -> Any:
    """Batches of ``text`` examples of about one length: transformers' ``LengthGroupedSampler`` (shuffled, then
    sorted by length within groups of up to 50 batches), in sentence-transformers' batch sampler.  Queries are a
    tenth of a passage's length; a random batch pads them all to its longest passage."""
    from sentence_transformers.base.sampler import DefaultBatchSampler
    from transformers.trainer_pt_utils import LengthGroupedSampler

    lengths = [len(text) for text in dataset["text"]]
    return DefaultBatchSampler(LengthGroupedSampler(batch_size, lengths=lengths, generator=generator),
                               batch_size=batch_size, drop_last=drop_last, valid_label_columns=valid_label_columns,
                               generator=generator, seed=seed)


def training_arguments(config: TrainConfig, steps_per_epoch: int) -> Any:
    """The trainer's arguments: checkpoints at each evaluation (resume after a kill), the best dev figure kept."""
    if config.student == "cross-encoder":
        from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments as Args
    else:
        from sentence_transformers import SentenceTransformerTrainingArguments as Args
    strategy = "steps" if config.eval_steps else "epoch"
    metric, higher = config.selection_metric
    extra: dict[str, Any] = {}
    if config.student == "bi-encoder" and config.loss == "mnrl":
        from sentence_transformers.base.sampler import BatchSamplers

        extra["batch_sampler"] = BatchSamplers.NO_DUPLICATES  # an in-batch negative equal to the positive
    if config.length_grouped:
        extra["batch_sampler"] = length_grouped_batches
    return Args(
        output_dir=str(config.work_dir) + "/checkpoints", num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.batch_size, per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.accumulation, learning_rate=config.learning_rate,
        warmup_steps=config.warmup, lr_scheduler_type="linear", seed=config.seed, data_seed=config.seed,
        eval_strategy=strategy, save_strategy=strategy, eval_steps=config.eval_steps, save_steps=config.eval_steps,
        logging_steps=max(1, min(config.eval_steps or steps_per_epoch, 10)), logging_first_step=True,
        load_best_model_at_end=True, metric_for_best_model=metric, greater_is_better=higher,
        save_total_limit=2, report_to="none", disable_tqdm=not config.progress, dataloader_num_workers=0,
        dataloader_pin_memory=False, **extra)


__all__ = ["collapse_watch", "dev_evaluator", "length_grouped_batches", "replace_printing", "step_timer",
           "training_arguments"]
