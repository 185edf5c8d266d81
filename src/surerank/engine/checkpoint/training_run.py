"""A training run read back whole and typed, for a report: the card's dev record (each evaluation, the training
loss per logged step, the kept checkpoint), its resources, and the run's outcome.

:class:`~surerank.engine.checkpoint.card.TrainingCard` keeps ``dev`` and ``resources`` as the trainer wrote them
(``describe()`` reads only the card's head); :class:`TrainingRun` reads them field by field, so a report draws
fields, never keys of a JSON object, and a hand-edited or truncated card fails naming the file and the field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from surerank import documents as doc
from surerank.engine.checkpoint.card import CARD_FILE, SOUP_LOSS, TrainingCard
from surerank.errors import InputError

RESULT_FILE = "training_result.json"  # in the work folder: the card plus the run's status (a collapse too)
STATUSES = ("saved", "collapsed")


def _float(data: Any, name: str, where: str, path: str) -> float:
    """A JSON number as a float; NaN and infinity are read (a diverged run logs them) and drawn as gaps."""
    full = f"{path}.{name}" if path else name
    if not isinstance(data, dict) or name not in data:
        raise InputError(f"{where}: field '{full}' is missing (a number)")
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{where}: field '{full}' must be a number, got {value!r}")
    return float(value)


def _figures(data: Any, where: str, path: str, prefix: str = "") -> dict[str, float]:
    """A map of named dev figures (``prefix`` kept and stripped: ``dev_`` in the trainer's evaluation logs)."""
    if not isinstance(data, dict):
        raise InputError(f"{where}: field '{path}' must be a JSON object of dev figures")
    return {k.removeprefix(prefix): _float(data, k, where, path) for k in data if k.startswith(prefix)}


@dataclass(frozen=True)
class LossPoint:
    """The training loss the trainer logged at one step (a mean over the steps since the last log)."""

    step: int
    loss: float


@dataclass(frozen=True)
class DevEvaluation:
    """One evaluation during training: the dev loss and surerank's dev figures (``spearman_teacher``,
    ``ndcg@10``, ``score_spread``, ``finite``) of the checkpoint saved at ``step``."""

    step: int
    epoch: float
    loss: float
    figures: dict[str, float]

    @classmethod
    def from_dict(cls, data: Any, where: str, path: str) -> DevEvaluation:
        if not isinstance(data, dict):
            raise InputError(f"{where}: field '{path}' must be a JSON object")
        return cls(step=doc.get(data, "step", "int", where, path, minimum=0),
                   epoch=float(doc.get(data, "epoch", "number", where, path, minimum=0)),
                   loss=_float(data, "loss", where, path), figures=_figures(data, where, path, "dev_"))


CHECKPOINT = re.compile(r"checkpoint-(\d+)$")  # transformers names each checkpoint folder by its global step


NOT_FITTING, MEMORISED = "not_fitting", "memorised"  # surerank.train.student.fit_verdict's answers
FIT_VERDICTS = (NOT_FITTING, MEMORISED)


@dataclass(frozen=True)
class TrainingFit:
    """The training loss on a fixed sample of the training lists, on the untrained and on the kept student, and
    what it says: ``not_fitting`` (no better on its own lists: lr too high), ``memorised`` (better on them, worse
    on dev), or None."""

    examples: int
    loss_before: float
    loss_after: float
    verdict: str | None

    @classmethod
    def from_dict(cls, data: Any, where: str, path: str) -> TrainingFit:
        if not isinstance(data, dict):
            raise InputError(f"{where}: field '{path}' must be a JSON object")
        verdict = doc.get(data, "verdict", "str", where, path, nullable=True)
        if verdict is not None and verdict not in FIT_VERDICTS:
            raise InputError(f"{where}: field '{path}.verdict' must be one of {', '.join(FIT_VERDICTS)} or null, "
                             f"got {verdict!r}")
        return cls(examples=doc.get(data, "examples", "int", where, path, minimum=1),
                   loss_before=_float(data, "loss_before", where, path),
                   loss_after=_float(data, "loss_after", where, path), verdict=verdict)


@dataclass(frozen=True)
class DevRecord:
    """The card's ``dev`` record, typed: the untrained student (``base``, and its dev loss unless the run was
    resumed), each evaluation, the training loss per logged step, the kept model and what chose it, and the
    teacher's own dev figures (None on cards written before they were recorded, or with no teacher)."""

    base: dict[str, float]
    base_loss: float | None
    final: dict[str, float]
    teacher: dict[str, float] | None
    evaluations: tuple[DevEvaluation, ...]
    train_loss: tuple[LossPoint, ...]
    selected_by: str  # the trainer's metric: eval_dev_spearman_teacher, eval_dev_ndcg@10 or eval_loss
    best: float | None
    best_checkpoint: str | None
    worse_than_base: bool | None  # None on cards written before the flag
    resumed_from: str | None
    training_fit: TrainingFit | None = None  # None on cards written before the fit check

    @property
    def metric(self) -> str:
        """The figure the kept checkpoint was chosen by, as named in ``figures``: a dev figure, or ``loss``."""
        return self.selected_by.removeprefix("eval_").removeprefix("dev_")

    def __post_init__(self) -> None:
        self.check_kept(self.best_checkpoint, self.evaluations, "dev record", "dev")

    @property
    def kept(self) -> DevEvaluation | None:
        """The evaluation whose checkpoint is the saved model (None when no checkpoint was kept)."""
        step = self.check_kept(self.best_checkpoint, self.evaluations, "dev record", "dev")
        return next((e for e in self.evaluations if e.step == step), None)

    @staticmethod
    def check_kept(checkpoint: str | None, evaluations: tuple[DevEvaluation, ...], where: str,
                   path: str) -> int | None:
        """The kept checkpoint's step, which must be one of the evaluations' (None when none was kept)."""
        if checkpoint is None:
            return None
        found = CHECKPOINT.search(checkpoint)
        if found is None:
            raise InputError(f"{where}: field '{path}.best_checkpoint' must end in checkpoint-STEP, got "
                             f"{checkpoint!r}")
        step = int(found.group(1))
        if not any(e.step == step for e in evaluations):
            raise InputError(f"{where}: field '{path}.best_checkpoint' names step {step}, which is not among "
                             f"'{path}.evaluations' (steps {[e.step for e in evaluations]})")
        return step

    @classmethod
    def from_dict(cls, data: Any, where: str, path: str = "dev") -> DevRecord:
        """Read ``card.dev`` field by field; the kept checkpoint must name one of the evaluations."""
        if not isinstance(data, dict):
            raise InputError(f"{where}: field '{path}' must be a JSON object")
        before = doc.get(data, "before_training", "object", where, path, nullable=True)
        teacher = doc.get(data, "teacher", "object", where, path, optional=True, nullable=True)
        evaluations = tuple(DevEvaluation.from_dict(e, where, f"{path}.evaluations[{i}]")
                            for i, e in enumerate(doc.get(data, "evaluations", "list", where, path)))
        losses = []
        for i, point in enumerate(doc.get(data, "train_loss", "list", where, path)):
            here = f"{path}.train_loss[{i}]"
            if not isinstance(point, dict):
                raise InputError(f"{where}: field '{here}' must be a JSON object")
            losses.append(LossPoint(doc.get(point, "step", "int", where, here, minimum=0),
                                    _float(point, "loss", where, here)))
        checkpoint = doc.get(data, "best_checkpoint", "str", where, path, nullable=True)
        cls.check_kept(checkpoint, evaluations, where, path)
        fit = doc.get(data, "training_fit", "object", where, path, optional=True, nullable=True)
        return cls(
            base=_figures(doc.get(data, "base", "object", where, path), where, f"{path}.base"),
            base_loss=_float(before, "loss", where, f"{path}.before_training") if before is not None else None,
            final=_figures(doc.get(data, "final", "object", where, path), where, f"{path}.final"),
            teacher=_figures(teacher, where, f"{path}.teacher") if teacher is not None else None,
            evaluations=evaluations, train_loss=tuple(losses),
            selected_by=doc.get(data, "selected_by", "str", where, path),
            best=None if data.get("best") is None else _float(data, "best", where, path), best_checkpoint=checkpoint,
            worse_than_base=doc.get(data, "worse_than_base", "bool", where, path, optional=True),
            resumed_from=doc.get(data, "resumed_from", "str", where, path, optional=True, nullable=True),
            training_fit=TrainingFit.from_dict(fit, where, f"{path}.training_fit") if fit is not None else None)


@dataclass(frozen=True)
class TrainingResources:
    """What the run cost: wall seconds (all of it; the trainer's loop alone), training pairs a second, peak RSS."""

    seconds: float
    train_seconds: float
    pairs_per_s: float
    peak_rss_mb: float
    threads: int | None

    @classmethod
    def from_dict(cls, data: Any, where: str, path: str = "resources") -> TrainingResources:
        return cls(*(float(doc.get(data, n, "number", where, path, minimum=0))
                     for n in ("seconds", "train_seconds", "pairs_per_s", "peak_rss_mb")),
                   threads=doc.get(data, "threads", "int", where, path, optional=True))


@dataclass(frozen=True)
class TrainingRun:
    """One training run as a report reads it: the card, its dev record and resources typed, and the outcome
    (``saved``, or ``collapsed`` with the reason: a collapsed run leaves only ``training_result.json``)."""

    card: TrainingCard
    dev: DevRecord
    resources: TrainingResources
    status: str
    collapse: str | None
    source: str

    @property
    def teacher_spec(self) -> Any:
        """The teacher's ranker spec (None when the student learnt from judgments only)."""
        return self.card.teacher["spec"] if self.card.teacher is not None else None

    @classmethod
    def from_dict(cls, data: Any, where: str, result: bool) -> TrainingRun:
        """A card (``result`` False: it sits in a saved model folder) or a work folder's training result."""
        card = TrainingCard.from_dict(data, where)
        if card.loss == SOUP_LOSS:
            members = ", ".join(str(m.get("path")) for m in card.data.get("soup", {}).get("members", []))
            raise InputError(f"{where}: a soup of students (surerank train --soup) averages weights and has no "
                             f"training run of its own; report its members ({members})")
        if card.teacher is not None and "spec" not in card.teacher:
            raise InputError(f"{where}: field 'teacher.spec' is missing (the teacher's ranker spec)")
        status, collapse = "saved", None
        if result:
            status = doc.get(data, "status", "str", where, choices=STATUSES)
            collapse = doc.get(data, "collapse", "str", where, nullable=True)
            if (status == "collapsed") != (collapse is not None):
                raise InputError(f"{where}: field 'collapse' must say why when 'status' is 'collapsed' and be "
                                 f"null otherwise, got status {status!r} and collapse {collapse!r}")
        return cls(card=card, dev=DevRecord.from_dict(card.dev, where),
                   resources=TrainingResources.from_dict(card.resources, where),
                   status=status, collapse=collapse, source=where)

    @classmethod
    def load(cls, path: str | Path) -> TrainingRun:
        """A model folder (its ``training_card.json``), a work folder (its ``training_result.json``), or either
        file; anything else is refused naming what was looked for."""
        path = Path(path)
        if path.is_dir():
            found = [path / name for name in (CARD_FILE, RESULT_FILE) if (path / name).is_file()]
            if not found:
                raise InputError(f"{path}: no {CARD_FILE} (a model folder written by `surerank train --student`) "
                                 f"or {RESULT_FILE} (its work folder) in it")
            path = found[0]
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{path}: not a readable training card ({e})") from e
        return cls.from_dict(data, str(path), result=path.name == RESULT_FILE)


__all__ = ["FIT_VERDICTS", "MEMORISED", "NOT_FITTING", "RESULT_FILE", "STATUSES", "DevEvaluation", "DevRecord",
           "LossPoint", "TrainingFit", "TrainingResources", "TrainingRun"]
