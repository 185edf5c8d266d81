"""The trust layer of a trained student, fitted on held-out judged queries (``surerank train --calibrate``).

A student's scores are not probabilities (a cosine, a logit on an arbitrary scale), and a calibration map is only
valid for the scores it was fitted on.  So the map is fitted on the scores users will get: the *saved* model
folder run by the ranker that serves it (``embedding`` for a bi-encoder, ``cross-encoder`` for a cross-encoder)
on the default ONNX backend, with :func:`surerank.trust.artifact.fit_trust` (the same fit as ``surerank
calibrate``; nothing is re-implemented here).  The artifact is written beside the weights as ``trust.json`` and
recorded on the training card; it is never applied silently: ``surerank rerank --trust DIR/trust.json`` and
``surerank serve --option NAME.calibration=DIR/trust.json`` apply it, and refuse it for another configuration.

The held-out queries are given lists (``--calibrate-input``) or, by default, the run's dev split: its queries'
full lists (not cut to ``--candidates``), never trained on but used to choose the checkpoint.  Judgments are
checked before training starts, so a run does not train for an hour and then fail to calibrate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from surerank.engine.checkpoint.card import TrainingCard
from surerank.errors import InputError, SureRankError
from surerank.formats import Qrels, read_qrels, read_queries
from surerank.registry import create
from surerank.train.examples import split_queries
from surerank.trust.abstention import CONFIDENCES
from surerank.trust.artifact import TrustArtifact, fit_trust
from surerank.trust.calibration import CALIBRATORS
from surerank.types import Query

logger = logging.getLogger(__name__)

TRUST_FILE = "trust.json"
SERVING_RANKER = {"bi-encoder": "embedding", "cross-encoder": "cross-encoder"}  # the ranker that loads each student


@dataclass
class CalibrationSettings:
    """What ``--calibrate`` fits: judgments of held-out queries (required), which queries, which components."""

    qrels: Path | str | Mapping[str, Mapping[str, int]] | None  # a TREC qrels file, or judgments already read
    lists: Path | str | Sequence[Query] | None = None  # held-out lists; None: the training run's dev split
    method: str = "platt"  # the calibration map (surerank.trust.calibration)
    abstention: str | None = None  # an abstention confidence (surerank.trust.abstention), fitted when given
    abstain_rate: float | None = None
    cutoff_alpha: float | None = None  # a conformal cutoff with this target miss rate, fitted when given
    relevance_level: int = 2
    options: dict[str, Any] = field(default_factory=dict)  # serving options (precision, max_length...): the
    # artifact fits only a ranker built with these, so the default (none) is the default backend's ranker

    def __post_init__(self) -> None:
        if self.qrels is None:
            raise InputError("calibrate.qrels: calibration needs judgments of the held-out queries "
                             "(a TREC qrels file; on the command line --calibrate QRELS)")
        if self.method not in CALIBRATORS:
            raise InputError(f"calibrate.method: {self.method!r} is unknown; choose from {', '.join(CALIBRATORS)}")
        if self.abstention is not None and self.abstention not in CONFIDENCES:
            raise InputError(f"calibrate.abstention: {self.abstention!r} is unknown; choose from "
                             f"{', '.join(CONFIDENCES)}")
        if self.abstain_rate is not None and not 0 <= self.abstain_rate < 1:
            raise InputError(f"calibrate.abstain_rate: must be in [0, 1), got {self.abstain_rate}")
        if self.cutoff_alpha is not None and not 0 < self.cutoff_alpha < 1:
            raise InputError(f"calibrate.cutoff_alpha: must be in (0, 1), got {self.cutoff_alpha}")

    def judgments(self) -> Qrels:
        if isinstance(self.qrels, Mapping):
            return {str(q): {str(d): int(g) for d, g in docs.items()} for q, docs in self.qrels.items()}
        return read_qrels(Path(str(self.qrels)))

    def qrels_name(self) -> str:
        return "judgments given in memory" if isinstance(self.qrels, Mapping) else str(self.qrels)


@dataclass
class HeldOut:
    """The held-out lists and their judgments, checked before training: what :func:`calibrate_saved` fits on."""

    settings: CalibrationSettings
    queries: list[Query]
    qrels: Qrels
    source: str  # "dev split" or the lists' file
    training_overlap: int  # held-out queries that were also training queries (their figures are optimistic)


def held_out_lists(settings: CalibrationSettings, queries: Sequence[Query], dev_fraction: float,
                   seed: int) -> HeldOut:
    """The queries to calibrate on (``settings.lists``, else the full lists of the dev split the trainer will
    draw: the same seeded split), refused naming the field when none is judged or no candidate is relevant.
    Called before the teacher scores anything and before training."""
    dev = {q.id for q in split_queries(queries, dev_fraction, seed)[1]}
    if settings.lists is None:
        held, source = [q for q in queries if q.id in dev], "dev split"
    elif isinstance(settings.lists, (str, Path)):
        held, source = read_queries(Path(settings.lists)), str(settings.lists)
    else:
        held, source = list(settings.lists), "lists given in memory"
    qrels = settings.judgments()
    judged = [q for q in held if q.id in qrels]
    where = f"calibrate.qrels ({settings.qrels_name()})"
    if not judged:
        ids = ", ".join(repr(q.id) for q in held[:3])
        raise InputError(f"{where}: none of the {len(held)} held-out queries ({source}; ids such as {ids}) has "
                         "judgments; calibration needs the judgments of the queries it is fitted on")
    relevant = sum(qrels[q.id].get(c.id, 0) >= settings.relevance_level for q in judged for c in q.candidates)
    if not relevant:
        raise InputError(f"{where}: no candidate of the {len(judged)} judged held-out queries ({source}) is "
                         f"relevant (grade >= {settings.relevance_level}, calibrate.relevance_level); a "
                         "calibration map needs relevant and non-relevant pairs")
    if len(judged) < len(held):
        logger.warning("calibration: %d of %d held-out queries (%s) have no judgments and are left out",
                       len(held) - len(judged), len(held), source)
    training = {q.id for q in queries} - dev
    overlap = sum(q.id in training for q in judged)
    if overlap:
        logger.warning("calibration: %d of %d held-out queries (%s) are training queries: the student was fitted "
                       "on them, so its calibration there is optimistic", overlap, len(judged), source)
    return HeldOut(settings, judged, qrels, source, overlap)


def calibrate_student(folder: str | Path, queries: Sequence[Query], settings: CalibrationSettings,
                      student: str | None = None, source: str = "", qrels: Qrels | None = None) -> TrustArtifact:
    """Fit the trust layer of the model in ``folder`` on judged ``queries``: the folder is run by its serving
    ranker (``student`` names its kind; None: read from its training card) with ``settings.options``, and the
    artifact records that ranker's ``describe()``.  ``qrels``: the judgments, when already read from
    ``settings.qrels``.  Not saved: :meth:`TrustArtifact.save` writes it."""
    folder = Path(folder)
    if student is None:
        student = TrainingCard.load(folder / "training_card.json").student
    if student not in SERVING_RANKER:
        raise InputError(f"student: {student!r} is unknown; choose from {', '.join(SERVING_RANKER)}")
    ranker = create(SERVING_RANKER[student], model=str(folder), **settings.options)
    return calibrate_ranker(ranker, queries, settings, source, qrels)


def calibrate_ranker(ranker: Any, queries: Sequence[Query], settings: CalibrationSettings, source: str = "",
                     qrels: Qrels | None = None) -> TrustArtifact:
    """Rank ``queries`` with ``ranker`` and fit ``settings``' components on them (``fit_trust``)."""
    description = ranker.describe()  # loads the model (and resolves precision="auto") before scoring
    lists = ranker.rank_many(list(queries))
    judgments = settings.judgments() if qrels is None else qrels
    artifact = fit_trust(lists, judgments, description, calibration=settings.method,
                         relevance_level=settings.relevance_level, abstention=settings.abstention,
                         abstain_rate=settings.abstain_rate, cutoff_alpha=settings.cutoff_alpha, source=source)
    artifact.fitted_on["qrels"] = [settings.qrels_name()]
    return artifact


def calibrate_saved(held: HeldOut, output: Path, card: TrainingCard) -> TrainingCard:
    """After the model is saved: fit its trust layer on ``held``, write ``output/trust.json`` and record it on
    the card (rewritten in place).  A failure here leaves the saved model as it is and says so."""
    started = time.perf_counter()
    try:
        artifact = calibrate_student(output, held.queries, held.settings, card.student,
                                     source=f"{held.source} ({len(held.queries)} held-out queries)", qrels=held.qrels)
    except (SureRankError, OSError) as error:
        ranker = SERVING_RANKER[card.student]
        raise SureRankError(f"calibrate: the model is saved in {output}, but fitting its trust layer failed "
                            f"({error}); `surerank calibrate --ranker {ranker} --option model={output}` fits it on "
                            "its own") from error
    path = artifact.save(output / TRUST_FILE)
    fitted = artifact.fitted_on
    in_sample = {k: v for k, v in fitted.get("calibration_in_sample", {}).items() if k != "reliability"}
    record = {"file": TRUST_FILE, "ranker": SERVING_RANKER[card.student], "options": dict(held.settings.options),
              "method": held.settings.method, "abstention": held.settings.abstention,
              "cutoff_alpha": held.settings.cutoff_alpha, "relevance_level": held.settings.relevance_level,
              "held_out": held.source, "qrels": held.settings.qrels_name(), "queries": fitted["queries"],
              "pairs": fitted["pairs"], "relevant_pairs": fitted["relevant_pairs"],
              "training_overlap": held.training_overlap, "in_sample": in_sample,
              "seconds": round(time.perf_counter() - started, 1)}
    card = replace(card, trust=record)
    card.save(output)
    logger.info("trust layer fitted on %d held-out queries (%s), written to %s (in-sample ECE %.4f); apply it "
                "with --trust %s", fitted["queries"], held.source, path, in_sample.get("ece", float("nan")), path)
    return card


__all__ = ["SERVING_RANKER", "TRUST_FILE", "CalibrationSettings", "HeldOut", "calibrate_ranker", "calibrate_saved",
           "calibrate_student", "held_out_lists"]
