"""A soup of students: the uniform average of the weights of several students fine-tuned from one checkpoint.

One fine-tuned student is one draw: trained on a few dozen queries, where it lands on unseen queries depends on
its seed, data order and dev split as much as on the recipe (docs/train.md measures a spread of 2-27% of the
base-teacher gap across three seeds of one recipe).  Students fine-tuned from the same checkpoint stay in one
basin, so the average of their weights is a model too, and it keeps what they agree on and averages away what
each learnt by chance ("model soups", Wortsman et al., 2022).  It runs at one student's cost, and making it
needs numpy and safetensors only (no torch).

A soup has no dev figure of its own: each member held out other queries, and the soup has seen all of them in
some member's training.  Judge it on queries none of its members trained on.  Its card (``loss: "soup"``)
names the members, their losses and seeds, and the sha256 of each member's weights.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from surerank.engine.checkpoint.card import CARD_FILE, SOUP_LOSS, TrainingCard
from surerank.engine.checkpoint.files import read_model_files
from surerank.errors import InputError
from surerank.storage import publish_folder, require_empty_folder

logger = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
#: member files not copied into the soup: its weights are new, and these describe one member's training or fit
NOT_COPIED = (WEIGHTS, CARD_FILE, "README.md", "trust.json")


def _member(folder: Path) -> tuple[TrainingCard, Path]:
    card_path, weights = folder / CARD_FILE, folder / WEIGHTS
    if not card_path.is_file():
        raise InputError(f"soup: {folder} has no {CARD_FILE}; a soup averages students written by "
                         "`surerank train --student`, whose cards say which checkpoint each started from")
    if not weights.is_file():
        raise InputError(f"soup: {folder} has no {WEIGHTS} (sharded or .bin weights are not averaged)")
    card = TrainingCard.load(card_path)
    if card.loss == SOUP_LOSS:
        raise InputError(f"soup: {folder} is a soup itself; give the students it was made of")
    return card, weights


def _average(paths: Sequence[Path]) -> dict[str, np.ndarray]:
    """The mean of each floating-point tensor over the members (in float64, stored in its own dtype); other
    tensors (integer buffers) must be equal in every member."""
    from safetensors.numpy import load_file

    first = load_file(str(paths[0]))
    sums = {k: v.astype(np.float64) if np.issubdtype(v.dtype, np.floating) else v for k, v in first.items()}
    for path in paths[1:]:
        tensors = load_file(str(path))
        if set(tensors) != set(first):
            extra = sorted(set(tensors) ^ set(first))[:3]
            raise InputError(f"soup: {path} does not hold the same tensors as {paths[0]} (differ: "
                             f"{', '.join(extra)}); members must share one architecture")
        for name, value in tensors.items():
            if value.shape != first[name].shape or value.dtype != first[name].dtype:
                raise InputError(f"soup: tensor {name} is {value.dtype}{list(value.shape)} in {path} but "
                                 f"{first[name].dtype}{list(first[name].shape)} in {paths[0]}")
            if np.issubdtype(value.dtype, np.floating):
                sums[name] += value
            elif not np.array_equal(value, first[name]):
                raise InputError(f"soup: integer tensor {name} differs between {paths[0]} and {path}")
    n = len(paths)
    return {k: (v / n).astype(first[k].dtype) if np.issubdtype(first[k].dtype, np.floating) else v
            for k, v in sums.items()}


def soup_students(members: Sequence[str | Path], output: str | Path) -> TrainingCard:
    """Average the weights of ``members`` (student folders from one checkpoint, of one kind) into ``output`` (new
    or empty), with a card naming them; refuses members that do not share their checkpoint, kind or tensors."""
    from safetensors.numpy import save_file  # a core dependency: a soup needs neither torch nor the train extra

    folders = [Path(m) for m in members]
    if len(folders) < 2:
        raise InputError(f"soup: give two or more students, got {len(folders)}")
    if len({f.resolve() for f in folders}) != len(folders):
        raise InputError("soup: a student is given twice; each member counts once")
    output = Path(output)
    require_empty_folder(output, "--output")
    read = [_member(f) for f in folders]
    cards = [card for card, _ in read]
    for what in ("student", "base_model"):
        values = {getattr(c, what) for c in cards}
        if len(values) > 1:
            raise InputError(f"soup: the students' cards name different {what.replace('_', ' ')}s "
                             f"({', '.join(sorted(values))}); a soup averages students of one kind fine-tuned "
                             "from one checkpoint")
    weights = _average([w for _, w in read])
    staging = output.with_name(output.name + ".soup-partial")
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(folders[0], staging, ignore=shutil.ignore_patterns(*NOT_COPIED))
    save_file(weights, str(staging / WEIGHTS), metadata={"format": "pt"})
    teachers = [c.teacher.get("spec") if c.teacher else None for c in cards]
    record: dict[str, Any] = {
        "weights": "uniform",
        "members": [{"path": str(f), "loss": c.loss, "seed": c.seed, "epochs": c.epochs, "steps": c.steps,
                     "teacher": t, "judgments": c.judgments,
                     # the weights' hash trust artifacts compare (for one file: its sha256), cached per file
                     "sha256": read_model_files(f).content_hash()["weights_sha256"], "dev_final": c.dev.get("final")}
                    for f, c, t in zip(folders, cards, teachers, strict=True)]}
    card = TrainingCard(
        student=cards[0].student, base_model=cards[0].base_model, loss=SOUP_LOSS, seed=-1, epochs=0.0, steps=0,
        seeded_head=any(c.seeded_head for c in cards), data={"soup": record},
        teacher={"spec": teachers[0]} if teachers[0] is not None and all(t == teachers[0] for t in teachers) else None,
        judgments=cards[0].judgments if len({c.judgments for c in cards}) == 1 else None,
        dev={"note": "a soup has no dev figure of its own: its members held out different queries"},
        versions=cards[0].versions)
    card.save(staging)
    publish_folder(staging, output)
    logger.info("soup of %d students (%s) saved in %s", len(folders),
                ", ".join(f"{c.loss} seed {c.seed}" for c in cards), output)
    return card


__all__ = ["soup_students"]
