"""The settings of one model training run, checked before anything heavy is loaded.

CPU-sized defaults: a 256-token input, batches of 8 with no accumulation, 32 candidates per list, warm-up on
the first 10% of steps, early stopping after 2 evaluations without a better dev figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from surerank.errors import InputError
from surerank.train.calibrate import CalibrationSettings
from surerank.train.examples import DEFAULT_LOSS, EMBEDDING_LOSS, LOSSES

STUDENTS = ("cross-encoder", "bi-encoder")
TEACHER_LABELS = ("scores", "order")
#: embedding-mse: targets a third of the way to the teacher are near the student (cosine 0.95 for
#: all-mpnet-base-v2 -> all-MiniLM-L6-v2) and rank most of the way to it (DL19: 63% of the gap, the vectors alone)
DEFAULT_EMBEDDING_MIX = 0.35


@dataclass
class TrainConfig:
    """One run: the student, where its labels come from, the schedule, and where things are written."""

    output: Path
    student: str = "bi-encoder"
    base_model: str | None = None  # a model folder / name the engine reads; None: the default MiniLM
    teacher: Any = None  # a ranker spec (name, mapping, or ranker object)
    qrels: Path | None = None
    loss: str | None = None  # None: the default for the student and the label source
    candidates: int = 32  # first-stage candidates per list the teacher scores and the student learns from
    negatives: int = 4  # mined negatives per judged positive
    margin: float = 0.0  # an unjudged negative must score this far below the weakest positive
    pairs_per_query: int = 16  # margin-mse: sampled passage pairs per query
    temperature: float = 1.0  # kl: both sides' temperature
    teacher_temperature: float | None = None  # kl: the teacher's, where its score scale differs
    teacher_labels: str = "scores"  # "order": the teacher's rank positions are its labels (a comparison ranker)
    judgment_weight: float = 1.0  # bce-mix: a judged pair's label = w * judgment + (1 - w) * teacher's soft label
    relevance_level: int = 2  # bce-mix: a judged grade >= this is relevant (TREC DL)
    embedding_mix: float = DEFAULT_EMBEDDING_MIX  # embedding-mse: each target this share of the way to the teacher
    #: False: the student trains with every dropout off (layers' and attention's, whatever its architecture calls
    #: them): for all-MiniLM-L6-v2, dropout alone moves a vector as far (per-dimension MSE 0.00016) as an
    #: embedding-mse target at mix 0.35 lies from it (0.00022), so the loss would mostly teach robustness to it
    dropout: bool = True
    #: embedding-mse (examples are single texts): batches of texts of about one length, so a batch of short
    #: queries is not padded to a passage's length; the loss is a mean over texts, so only the cost changes
    group_by_length: bool = True
    epochs: float = 1.0
    learning_rate: float = 2e-5
    batch_size: int = 8
    accumulation: int = 1
    warmup: float = 0.1  # a fraction of the steps (< 1) or a number of steps
    max_length: int = 256
    dev_fraction: float = 0.2
    eval_steps: int | None = None  # None: evaluate (and checkpoint) once per epoch
    max_steps: int | None = None  # stop after this many optimiser steps (None: the epochs decide)
    patience: int = 2  # early stopping: evaluations without a better selection figure; 0 turns it off
    select: str = "dev"  # the checkpoint kept: "dev" (rank correlation with the teacher, else nDCG@10), "loss"
    seed: int = 0
    work_dir: Path | None = None  # checkpoints (resume) and the teacher cache; default OUTPUT.work
    teacher_cache: Path | None = None
    calibrate: CalibrationSettings | None = None  # fit the trust layer on held-out judged queries after saving
    collapse_tol: float = 1e-5  # median per-list spread of dev scores at or below this: collapsed
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        if self.student not in STUDENTS:
            raise InputError(f"student: {self.student!r} is unknown; choose from {', '.join(STUDENTS)}")
        if self.teacher is None and self.qrels is None:
            raise InputError("train: give a teacher (a ranker spec), judgments (qrels), or both")
        source = "teacher" if self.teacher is not None else "judgments"
        if self.loss is None:
            self.loss = DEFAULT_LOSS[(self.student, source)]
        self._check_loss()
        for name in ("candidates", "batch_size", "accumulation", "max_length", "negatives", "pairs_per_query",
                     "relevance_level"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise InputError(f"{name}: must be a positive integer, got {getattr(self, name)!r}")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            raise InputError(f"max_steps: must be a positive integer or None, got {self.max_steps!r}")
        if self.candidates < 2:
            raise InputError("candidates: at least 2 per list (a ranking loss compares them)")
        if self.epochs <= 0 or self.learning_rate <= 0 or self.temperature <= 0:
            raise InputError("epochs, learning_rate and temperature must be positive")
        if self.select not in ("dev", "loss"):
            raise InputError(f"select: {self.select!r} is unknown; choose from dev, loss")
        if self.work_dir is None:
            self.work_dir = self.output.with_name(self.output.name + ".work")
        if self.teacher_cache is None:
            self.teacher_cache = Path(self.work_dir) / "teacher_scores.json"

    def _check_loss(self) -> None:
        """The loss exists for the student, its label sources are given, and the label options fit it."""
        if (self.student, self.loss) not in LOSSES:
            known = [loss for (s, loss) in LOSSES if s == self.student]
            other = [s for (s, loss) in LOSSES if loss == self.loss]
            hint = f" (a {other[0]} loss)" if other else ""
            raise InputError(f"loss: {self.loss!r} is not a {self.student} loss{hint}; choose from {', '.join(known)}")
        needs = LOSSES[(self.student, str(self.loss))][0]
        if needs in ("teacher", "both") and self.teacher is None:
            raise InputError(f"loss {self.loss}: learns from a teacher's scores; give --teacher")
        if needs in ("judgments", "both") and self.qrels is None:
            raise InputError(f"loss {self.loss}: learns from judgments; give --qrels")
        if self.teacher_labels not in TEACHER_LABELS:
            raise InputError(f"teacher_labels: {self.teacher_labels!r} is unknown; choose from "
                             f"{', '.join(TEACHER_LABELS)}")
        if self.teacher_labels == "order" and self.teacher is None:
            raise InputError("teacher_labels: 'order' reads a teacher's ranked lists; give --teacher")
        if self.teacher_labels == "order" and self.loss == EMBEDDING_LOSS:
            raise InputError(f"teacher_labels: loss {EMBEDDING_LOSS} learns the teacher's vectors, not its ranks or "
                             "scores; 'order' does not apply")
        if self.teacher_labels == "order" and needs == "judgments":
            raise InputError(f"teacher_labels: 'order' makes the teacher's ranks labels, but loss {self.loss} learns "
                             "from judgments only; choose a teacher loss or bce-mix")
        if not 0.0 < self.embedding_mix <= 1.0:
            raise InputError(f"embedding_mix: must be above 0 and at most 1, got {self.embedding_mix!r}")
        if self.embedding_mix != DEFAULT_EMBEDDING_MIX and self.loss != EMBEDDING_LOSS:
            raise InputError(f"embedding_mix: only loss {EMBEDDING_LOSS} mixes targets (loss is {self.loss})")
        if not self.group_by_length and self.loss != EMBEDDING_LOSS:
            raise InputError(f"group_by_length: only loss {EMBEDDING_LOSS} batches single texts, which grouping by "
                             f"length applies to (loss is {self.loss}: its batches are lists or pairs)")
        if not 0.0 <= self.judgment_weight <= 1.0:
            raise InputError(f"judgment_weight: must be between 0 and 1, got {self.judgment_weight!r}")
        if self.judgment_weight != 1.0 and self.loss != "bce-mix":
            raise InputError(f"judgment_weight: only loss bce-mix mixes judgments with the teacher (loss is "
                             f"{self.loss})")

    @property
    def selection_metric(self) -> tuple[str, bool]:
        """The trainer's metric for the best checkpoint and early stopping, and whether higher is better: a
        dev ranking figure by default (a pointwise MSE's dev loss is mostly the scores' offset, not their order)."""
        if self.select == "loss":
            return "eval_loss", False
        if self.teacher is None or self.label_source == "both":  # learning judgments too: nDCG is the target
            return "eval_dev_ndcg@10", True
        return "eval_dev_spearman_teacher", True

    @property
    def label_source(self) -> str:
        return LOSSES[(self.student, str(self.loss))][0]

    def schedule(self) -> dict[str, Any]:
        """What the card records of the schedule."""
        keys = ("learning_rate", "batch_size", "accumulation", "warmup", "max_length", "epochs", "max_steps",
                "eval_steps", "patience", "select", "candidates", "negatives", "margin", "temperature",
                "teacher_temperature", "dev_fraction", "collapse_tol", "teacher_labels", "judgment_weight",
                "relevance_level", "embedding_mix", "dropout")
        return {**{k: getattr(self, k) for k in keys},
                "batches": "length-grouped" if self.length_grouped else "random"}

    @property
    def length_grouped(self) -> bool:
        """Whether batches are grouped by length: asked for, and the examples are single texts."""
        return self.group_by_length and self.loss == EMBEDDING_LOSS


__all__ = ["STUDENTS", "TEACHER_LABELS", "TrainConfig"]
