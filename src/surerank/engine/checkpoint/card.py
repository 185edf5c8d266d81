"""The training card a model folder made by ``surerank train`` carries: what the model learnt from, and how.

A typed document (``{"kind": "surerank.training-card", "version": 1, ...}``, see :mod:`surerank.documents`)
written beside the weights as ``training_card.json``.  It lives with the checkpoint readers, not in
:mod:`surerank.train`, because the encoder rankers read it back: ``describe()`` names the card of the model
it runs, so a trust artifact or a report says which training made the scores.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from surerank import documents as doc
from surerank.errors import InputError
from surerank.storage import atomic_write_json

KIND = "surerank.training-card"
VERSION = 1
CARD_FILE = "training_card.json"
#: the card's ``loss`` of a soup of students (``surerank train --soup``): weights averaged, nothing trained
SOUP_LOSS = "soup"
STUDENTS = ("cross-encoder", "bi-encoder")


@dataclass
class TrainingCard:
    """What one training run made: the student, its data, its teacher, loss, schedule and dev figures."""

    student: str  # "cross-encoder" | "bi-encoder"
    base_model: str  # the checkpoint it started from
    loss: str
    seed: int
    epochs: float  # epochs run (fractional when early stopping cut one short)
    steps: int
    seeded_head: bool = False  # a fresh classification head on a checkpoint that had none (a bi-encoder)
    data: dict[str, Any] = field(default_factory=dict)  # input, queries train/dev, examples, negatives mined
    teacher: dict[str, Any] | None = None  # spec, pairs scored / cached, its cost trace
    judgments: str | None = None  # the qrels file, when labels came from judgments
    dev: dict[str, Any] = field(default_factory=dict)  # dev loss and figures per evaluation, the best one
    schedule: dict[str, Any] = field(default_factory=dict)  # lr, warm-up, batch, accumulation, max length
    resources: dict[str, Any] = field(default_factory=dict)  # seconds, pairs/s, peak RSS
    versions: dict[str, str] = field(default_factory=dict)  # torch, transformers, sentence-transformers, ...
    trust: dict[str, Any] | None = None  # the trust artifact fitted on held-out queries (train --calibrate)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, "version": VERSION, **asdict(self)}

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / CARD_FILE
        atomic_write_json(path, self.to_dict(), indent=2)
        return path

    @classmethod
    def from_dict(cls, data: Any, where: str) -> TrainingCard:
        """Read a card field by field; a hand-edited or truncated one fails naming the field."""
        doc.header(data, KIND, [VERSION], where)
        values = {
            "student": doc.get(data, "student", "str", where, choices=STUDENTS),
            "base_model": doc.get(data, "base_model", "str", where),
            "loss": doc.get(data, "loss", "str", where),
            "seed": doc.get(data, "seed", "int", where),
            "epochs": float(doc.get(data, "epochs", "number", where, minimum=0)),
            "steps": doc.get(data, "steps", "int", where, minimum=0),
            "seeded_head": doc.get(data, "seeded_head", "bool", where, optional=True, default=False),
            "teacher": doc.get(data, "teacher", "object", where, optional=True, nullable=True),
            "judgments": doc.get(data, "judgments", "str", where, optional=True, nullable=True),
            "trust": doc.get(data, "trust", "object", where, optional=True, nullable=True),
        }
        for name in ("data", "dev", "schedule", "resources", "versions"):
            values[name] = dict(doc.get(data, name, "object", where, optional=True, default={}))
        if values["trust"] is not None:
            values["trust"] = dict(values["trust"])
            doc.get(values["trust"], "file", "str", where, "trust")
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> TrainingCard:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"{path}: not a readable training card ({e})") from e
        return cls.from_dict(data, str(path))


def card_summary(folder: Path) -> dict[str, Any] | None:
    """What ``describe()`` says of the card in a model folder (None when there is none): its path, student,
    loss, teacher and seed.  A card that does not read is an error, not silently left out."""
    path = folder / CARD_FILE
    if not path.is_file():
        return None
    card = TrainingCard.load(path)
    teacher = card.teacher.get("spec") if card.teacher else None
    return {"path": str(path), "student": card.student, "base_model": card.base_model, "loss": card.loss,
            "teacher": teacher, "judgments": card.judgments, "seed": card.seed, "seeded_head": card.seeded_head}


__all__ = ["CARD_FILE", "KIND", "SOUP_LOSS", "VERSION", "TrainingCard", "card_summary"]
