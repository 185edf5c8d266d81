"""``surerank train --calibrate``: the trust layer of a trained student, fitted on held-out judged queries with the
saved folder on the default ONNX backend, written beside it and applied where the student is served.

Tiny random-weight students (tests/test_train.py's) trained for real on DL19 lists; the held-out queries are the
run's dev split, judged by the DL19 qrels.  ``rerank --trust`` runs on a copy of the model folder at another path,
and ``surerank serve`` in a subprocess on loopback.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("accelerate")
pytest.importorskip("datasets")

from serve_support import Server
from surerank.errors import InputError
from surerank.eval.datasets import dataset_file
from surerank.trust import TrustArtifact
from test_train import StopwordTeacher, config, lists, tiny

FULL = 40  # candidates per held-out list: training reads the first 16, calibration the whole list


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A tiny bi-encoder distilled from the stop-word teacher, calibrated (platt, max abstention, a conformal
    cutoff) on its dev split's full lists."""
    from surerank.train import train_model
    from surerank.train.calibrate import CalibrationSettings

    tmp = tmp_path_factory.mktemp("calibrated")
    base = tiny(tmp_path_factory.getbasetemp() / "tiny-bi", "bi-encoder")
    settings = CalibrationSettings(qrels=dataset_file("dl19", "qrels"), abstention="max", cutoff_alpha=0.3)
    cfg = config(tmp, "bi-encoder", base, loss="kl", temperature=0.1, epochs=1, calibrate=settings)
    return train_model(cfg, lists(20, FULL))


def dev_queries(card: Any) -> list:
    ids = set(card.data["dev_ids"])
    return [q for q in lists(20, FULL) if q.id in ids]


def test_the_artifact_is_written_beside_the_model_and_fits_its_served_ranker(calibrated: Any) -> None:
    from surerank import Reranker
    from surerank.engine.checkpoint.card import TrainingCard

    folder = calibrated.output
    artifact = TrustArtifact.load(folder / "trust.json")  # the existing loader: every field validated
    served = Reranker("embedding", model=str(folder))  # the default backend and precision, as users load it
    artifact.check_ranker(served.describe())  # fitted for exactly this configuration
    assert served.describe()["backend"] == "onnx" and artifact.ranker["backend"] == "onnx"
    dev = dev_queries(calibrated.card)
    assert artifact.fitted_on["queries"] == len(dev) == calibrated.card.data["dev_queries"] > 0
    assert artifact.fitted_on["pairs"] == FULL * len(dev)  # the full held-out lists, not the 16 trained on
    assert artifact.calibration.method == "platt" and artifact.abstention.confidence == "max"
    assert artifact.cutoff is not None and artifact.cutoff.alpha == 0.3
    card = TrainingCard.load(folder / "training_card.json")  # the card on disk records it
    assert card.trust == calibrated.card.trust
    assert card.trust["file"] == "trust.json" and card.trust["held_out"] == "dev split"
    assert card.trust["queries"] == len(dev) and card.trust["training_overlap"] == 0
    assert 0 <= card.trust["in_sample"]["ece"] <= 1 and card.trust["ranker"] == "embedding"


def test_probabilities_are_in_0_1_and_monotone_in_the_raw_score(calibrated: Any) -> None:
    from surerank import Reranker

    artifact = TrustArtifact.load(calibrated.output / "trust.json")
    ranked = Reranker("embedding", model=str(calibrated.output)).rank_many(dev_queries(calibrated.card))
    scores = np.array([it.score for r in ranked for it in r.items])
    grid = np.linspace(scores.min() - 0.5, scores.max() + 0.5, 200)
    p = artifact.calibration.predict(grid)
    assert np.all((p >= 0) & (p <= 1)) and np.all(np.diff(p) >= 0)
    artifact.apply(ranked)
    for r in ranked:
        by_score = sorted(r.items, key=lambda it: it.score)
        probs = [it.probability for it in by_score]
        assert all(q is not None and 0 <= q <= 1 for q in probs)
        assert probs == sorted(probs)  # a higher score never gets a lower probability
        assert [it.rank for it in r.items] == list(range(1, len(r.items) + 1))  # the order is untouched


def test_rerank_trust_applies_it_to_a_copy_of_the_trained_folder(calibrated: Any, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from surerank.cli import main

    copy = tmp_path / "elsewhere" / "student"
    shutil.copytree(calibrated.output, copy)  # deployed at another path: the artifact must still fit
    out = tmp_path / "dl19.jsonl"
    code = main(["rerank", "--input", "dl19", "--max-queries", "2", "--ranker", "embedding", "-o", f"model={copy}",
                 "--trust", str(copy / "trust.json"), "--output", str(out)])
    assert code == 0, capsys.readouterr().err
    artifact = TrustArtifact.load(copy / "trust.json")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2
    for record in records:
        assert record["info"]["calibration"] == "platt" and "abstain" in record
        probs = [c["probability"] for c in record["candidates"]]
        expected = artifact.calibration.predict([c["score"] for c in record["candidates"]])
        assert np.allclose(probs, expected) and all(0 <= p <= 1 for p in probs)
        assert all("keep" in c for c in record["candidates"])  # the conformal cutoff, from the artifact


def test_the_served_student_returns_calibrated_probabilities(calibrated: Any) -> None:
    import httpx

    from surerank import Reranker

    folder = calibrated.output
    query = lists(21, FULL)[20]  # a query the student never saw
    docs = [c.text for c in query.candidates]
    expected = Reranker("embedding", model=str(folder)).rank(query.text, docs)
    TrustArtifact.load(folder / "trust.json").apply([expected])
    server = Server("--model", "student=embedding", "--option", f"student.model={folder}",
                    "--option", f"student.calibration={folder / 'trust.json'}")
    try:
        response = httpx.post(f"{server.url}/v2/rerank", timeout=120, json={
            "query": query.text, "documents": docs, "surerank": {"probability": True}})
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [r["index"] for r in results] == [it.index for it in expected.items]
        assert [r["probability"] for r in results] == pytest.approx([it.probability for it in expected.items],
                                                                      abs=1e-6)
        assert httpx.get(f"{server.url}/v1/models", timeout=10).json()["data"][0]["calibrated"] is True
    finally:
        server.stop()


def test_calibration_without_judgments_is_refused_naming_the_field(tmp_path: Path, tmp_path_factory:
                                                                   pytest.TempPathFactory) -> None:
    from surerank.train import train_model
    from surerank.train.calibrate import CalibrationSettings

    with pytest.raises(InputError, match=r"calibrate\.qrels: calibration needs judgments"):
        CalibrationSettings(qrels=None)
    with pytest.raises(InputError, match=r"calibrate\.method: 'sigmoid' is unknown"):
        CalibrationSettings(qrels="q.txt", method="sigmoid")
    unrelated = tmp_path / "other.qrels"
    unrelated.write_text("q-elsewhere 0 d1 2\nq-elsewhere 0 d2 0\n")
    log = tmp_path / "teacher.tsv"
    base = tiny(tmp_path_factory.getbasetemp() / "tiny-bi", "bi-encoder")
    cfg = config(tmp_path, "bi-encoder", base, loss="kl", teacher=StopwordTeacher(str(log)),
                 calibrate=CalibrationSettings(qrels=unrelated))
    with pytest.raises(InputError, match=r"calibrate\.qrels .*other\.qrels.*none of the 4 held-out queries"):
        train_model(cfg, lists(20, 16))
    assert not log.exists() and not (tmp_path / "model").exists()  # refused before the teacher and training


def test_cli_calibrate_options_need_the_judgments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from surerank.cli import main

    code = main(["train", "--student", "bi-encoder", "--input", "dl19", "--teacher", "embedding",
                 "--calibrate-input", "dl20", "--output", str(tmp_path / "m")])
    assert code == 2
    assert "--calibrate-input: calibration needs judgments of the held-out queries; give them with --calibrate " \
           "QRELS" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_cli_trains_a_cross_encoder_and_calibrates_it_on_its_dev_split(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]) -> None:
    from surerank import Reranker
    from surerank.cli import main

    source = lists(12, FULL)
    data = tmp_path / "lists.jsonl"
    data.write_text("".join(json.dumps({"qid": q.id, "query": q.text, "candidates": [
        {"id": c.id, "text": c.text} for c in q.candidates]}) + "\n" for q in source))
    base = tiny(tmp_path_factory.getbasetemp() / "tiny-ce", "cross-encoder")
    out = tmp_path / "reranker"
    code = main(["train", "--student", "cross-encoder", "--model", str(base), "--input", str(data), "--qrels", "dl19",
                 "--loss", "bce", "--candidates", "16", "--epochs", "1", "--lr", "1e-3", "--max-length", "64",
                 "--no-progress", "--calibrate", "dl19", "--calibrate-method", "isotonic", "--output", str(out)])
    assert code == 0, capsys.readouterr().err
    printed = json.loads(capsys.readouterr().out)
    assert printed["trust"] == str(out / "trust.json")
    artifact = TrustArtifact.load(out / "trust.json")
    artifact.check_ranker(Reranker("cross-encoder", model=str(out)).describe())
    card = json.loads((out / "training_card.json").read_text())
    assert card["trust"]["method"] == artifact.calibration.method == "isotonic"
    assert card["trust"]["ranker"] == "cross-encoder" and card["trust"]["qrels"] == str(dataset_file("dl19", "qrels"))
    assert artifact.fitted_on["pairs"] == FULL * card["data"]["dev_queries"]


def test_where_the_training_card_lies_is_not_part_of_the_score_fingerprint() -> None:
    from surerank.trust.fingerprint import differences, score_fingerprint

    card = {"path": "/srv/a/student/training_card.json", "student": "bi-encoder", "loss": "kl", "seed": 0}
    fitted = score_fingerprint({"ranker": "embedding", "weights_sha256": "a" * 64, "training_card": card})
    moved = score_fingerprint({"ranker": "embedding", "weights_sha256": "a" * 64,
                               "training_card": {**card, "path": "/opt/b/training_card.json"}})
    assert differences(fitted, moved) == []
    retrained = score_fingerprint({"ranker": "embedding", "weights_sha256": "a" * 64,
                                   "training_card": {**card, "loss": "margin-mse"}})
    assert differences(fitted, retrained) == [("training_card.loss", "kl", "margin-mse")]
