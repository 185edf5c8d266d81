"""A soup of students (``surerank train --soup``): the mean of their weights, a card naming them, on the default
backend at parity with sentence-transformers, and refusals of members that cannot be averaged."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")

from surerank.errors import InputError
from test_train import config, lists, tiny


@pytest.fixture(scope="module")
def students(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two tiny bi-encoder students of one base, seeds 0 and 1 (a few steps each)."""
    from surerank.train import train_model

    base = tiny(tmp_path_factory.getbasetemp() / "tiny-bi", "bi-encoder")
    out = []
    for seed in (0, 1):
        folder = tmp_path_factory.mktemp(f"student{seed}")
        result = train_model(config(folder, "bi-encoder", base, loss="kl", temperature=0.1, max_steps=4, seed=seed,
                                    dropout=False), lists(12, 8))
        out.append(result.output)
    return out


def _weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


def test_a_soup_is_the_mean_of_its_students_and_its_card_names_them(students: list[Path], tmp_path: Path) -> None:
    from surerank.train import soup_students

    card = soup_students(students, tmp_path / "soup")
    soup, members = _weights(tmp_path / "soup"), [_weights(s) for s in students]
    assert set(soup) == set(members[0])
    moved = 0
    for name, value in soup.items():
        np.testing.assert_allclose(value, (members[0][name].astype(np.float64) + members[1][name]) / 2, atol=1e-7)
        moved += not np.array_equal(members[0][name], members[1][name])
    assert moved > 0  # the seeds trained different students: the mean is a third model
    record = card.data["soup"]
    assert card.loss == "soup" and card.student == "bi-encoder" and card.seed == -1
    assert [m["seed"] for m in record["members"]] == [0, 1] and record["weights"] == "uniform"
    first = hashlib.sha256((students[0] / "model.safetensors").read_bytes()).hexdigest()
    assert record["members"][0]["sha256"] == first
    assert not (tmp_path / "soup" / "README.md").exists()  # a member's model card does not describe the soup


def test_the_soup_runs_on_the_default_backend_at_parity_and_says_it_is_a_soup(students: list[Path],
                                                                                tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from surerank import Reranker
    from surerank.train import soup_students

    soup_students(students, tmp_path / "soup")
    q = lists(21)[20]
    model = SentenceTransformer(str(tmp_path / "soup"), device="cpu")
    qv, dv = model.encode([q.text]), model.encode([c.text for c in q.candidates])
    reference = (dv @ qv[0]) / (np.linalg.norm(dv, axis=1) * np.linalg.norm(qv[0]))
    ranker = Reranker("embedding", model=str(tmp_path / "soup"), precision="fp32")
    ranked = ranker.rank(q.text, [c.text for c in q.candidates])
    ours = np.array([it.score for it in sorted(ranked.items, key=lambda it: it.index)])
    assert np.abs(ours - reference).max() <= 1e-4
    assert ranker.describe()["training_card"]["loss"] == "soup"


def _copy_with_card(source: Path, target: Path, **changes: Any) -> Path:
    shutil.copytree(source, target)
    card = json.loads((target / "training_card.json").read_text())
    card.update(changes)
    (target / "training_card.json").write_text(json.dumps(card))
    return target


def test_members_that_cannot_be_averaged_are_refused_by_name(students: list[Path], tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    from surerank.train import soup_students

    with pytest.raises(InputError, match="two or more"):
        soup_students(students[:1], tmp_path / "a")
    with pytest.raises(InputError, match="given twice"):
        soup_students([students[0], students[0]], tmp_path / "b")
    other_base = _copy_with_card(students[1], tmp_path / "other-base", base_model="/elsewhere/bert")
    with pytest.raises(InputError, match="different base models"):
        soup_students([students[0], other_base], tmp_path / "c")
    cross = _copy_with_card(students[1], tmp_path / "cross", student="cross-encoder")
    with pytest.raises(InputError, match="different students"):
        soup_students([students[0], cross], tmp_path / "d")
    no_card = tmp_path / "no-card"
    shutil.copytree(students[1], no_card)
    (no_card / "training_card.json").unlink()
    with pytest.raises(InputError, match=r"no training_card\.json"):
        soup_students([students[0], no_card], tmp_path / "e")
    reshaped = _copy_with_card(students[1], tmp_path / "reshaped")
    weights = _weights(reshaped)
    name = next(k for k, v in weights.items() if v.ndim == 2)
    weights[name] = weights[name][:-1]
    save_file(weights, str(reshaped / "model.safetensors"))
    with pytest.raises(InputError, match=f"tensor {name} is"):
        soup_students([students[0], reshaped], tmp_path / "f")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("")
    with pytest.raises(InputError, match="new or empty"):
        soup_students(students, taken)
    assert not (tmp_path / "f").exists() and not list(tmp_path.glob("*.soup-partial"))


def test_a_soup_is_not_a_member_and_the_cli_writes_one(students: list[Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from surerank.cli import main
    from surerank.train import soup_students

    code = main(["train", "--soup", *map(str, students), "--output", str(tmp_path / "soup")])
    assert code == 0, capsys.readouterr().err
    printed = json.loads(capsys.readouterr().out)
    assert printed["loss"] == "soup" and [m["seed"] for m in printed["members"]] == [0, 1]
    with pytest.raises(InputError, match="a soup itself"):
        soup_students([students[0], tmp_path / "soup"], tmp_path / "again")
    from surerank.engine.checkpoint.training_run import TrainingRun

    with pytest.raises(InputError, match="no training run of its own; report its members") as refused:
        TrainingRun.load(tmp_path / "soup")
    assert str(students[1]) in str(refused.value)
