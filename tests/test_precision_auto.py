"""precision="auto", the CPU default: int8-fast where the model's build-time drift check on calibration text
stays within the bound, fp32 otherwise; the figure, the bound and the choice in describe(), the choice cached
with the graph, an explicit precision winning, and trust artifacts fingerprinting the resolved precision.

The tiny cross-encoder (two MiniLM layers and a random 1-logit head) drifts far past the bound under int8
(its logits barely spread: max |Δ| is about 5 sd of them), so it stands for a model past it; raising the bound
makes the same model one within it, without a second model to build.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import surerank
from engine_fixtures import build_tiny_cross_encoder, has
from surerank.engine.onnx import drift
from surerank.engine.runtime import core
from surerank.errors import InputError

DOCS = ["lift is an upward force on a wing", "a cat sat on a mat", "drag opposes the motion of a body"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One cache for the module: the tiny model's int8-fast graph is built and its drift measured once
    (ONNX Runtime's per-channel quantisation is slow); the tests then read them back."""
    root = tmp_path_factory.mktemp("auto")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SURERANK_CACHE", str(root / "cache"))
        model_dir = build_tiny_cross_encoder(root / "ce")
        yield model_dir


@pytest.fixture()
def tiny_ce(shared, monkeypatch):
    """The module's model, with a fresh engine table: every test resolves auto itself."""
    monkeypatch.setattr(core, "_ENGINES", {})
    return shared


def _scores(ranked):
    return np.array([i.score for i in sorted(ranked.items, key=lambda i: i.index)])


def test_auto_is_fp32_for_a_model_past_the_bound(tiny_ce):
    ranker = surerank.Reranker("cross-encoder", model=str(tiny_ce))
    desc = ranker.describe()
    auto = desc["precision_auto"]
    assert desc["precision"] == "fp32" and auto["choice"] == "fp32"
    assert auto["bound"] == drift.AUTO_DRIFT_BOUND and auto["drift"] > auto["bound"]
    assert auto["measure"] == drift.AUTO_MEASURE and auto["score"] == "logit" and auto["scores"] == 96
    assert desc["batch_invariant"] and "fp32_nodes" not in desc
    ranked = ranker.rank("what is lift", DOCS)
    assert ranked.info["precision"] == "fp32"
    fp32 = surerank.Reranker("cross-encoder", model=str(tiny_ce), precision="fp32").rank("what is lift", DOCS)
    np.testing.assert_allclose(_scores(ranked), _scores(fp32), atol=1e-6)


def test_auto_is_int8_fast_for_a_model_within_the_bound(tiny_ce, monkeypatch):
    monkeypatch.setattr(drift, "AUTO_DRIFT_BOUND", 100.0)
    ranker = surerank.Reranker("cross-encoder", model=str(tiny_ce))
    desc = ranker.describe()
    assert desc["precision"] == "int8-fast"
    assert desc["precision_auto"]["choice"] == "int8-fast" and desc["precision_auto"]["bound"] == 100.0
    assert desc["precision_auto"]["drift"] <= 100.0
    assert desc["batch_size"] == 1 and desc["batch_invariant"]  # int8 runs one sequence per batch
    assert "classifier" in desc["fp32_nodes"]
    ranked = ranker.rank("what is lift", DOCS)
    assert ranked.info["precision"] == "int8-fast"
    named = surerank.Reranker("cross-encoder", model=str(tiny_ce), precision="int8-fast")
    assert named.engine.backend.path == ranker.engine.backend.path  # the same graph as int8-fast named
    np.testing.assert_allclose(_scores(ranked), _scores(named.rank("what is lift", DOCS)), atol=1e-6)


def test_the_drift_is_measured_once_and_cached_with_the_graph(tiny_ce, monkeypatch):
    first = surerank.Reranker("cross-encoder", model=str(tiny_ce)).describe()["precision_auto"]
    records = list((tiny_ce.parent / "cache" / "onnx").glob("ce-*int8-pc-fold.auto.json"))
    assert len(records) == 1
    stored = json.loads(records[0].read_text())
    assert stored["choice"] == "fp32" and stored["drift"] == pytest.approx(first["drift"])

    def no_measuring(*args, **kwargs):
        raise AssertionError("the drift was measured again")

    monkeypatch.setattr(drift, "measure_drift", no_measuring)
    monkeypatch.setattr(core, "_ENGINES", {})
    again = surerank.Reranker("cross-encoder", model=str(tiny_ce)).describe()["precision_auto"]
    assert again == first
    # another bound re-decides from the stored figure, still without measuring
    monkeypatch.setattr(drift, "AUTO_DRIFT_BOUND", first["drift"] + 1.0)
    monkeypatch.setattr(core, "_ENGINES", {})
    wider = surerank.Reranker("cross-encoder", model=str(tiny_ce)).describe()
    assert wider["precision"] == "int8-fast" and wider["precision_auto"]["drift"] == first["drift"]


def test_a_named_precision_wins_over_auto(tiny_ce):
    for precision in ("fp32", "int8-fast"):
        desc = surerank.Reranker("cross-encoder", model=str(tiny_ce), precision=precision).describe()
        assert desc["precision"] == precision and "precision_auto" not in desc
    with pytest.raises(InputError, match="precision: 'fp16' is not available with backend 'onnx'"):
        surerank.Reranker("cross-encoder", model=str(tiny_ce), precision="fp16")


def test_the_default_precision_is_auto_on_both_rankers(tiny_ce):
    assert surerank.Reranker("cross-encoder", model=str(tiny_ce)).engine_config.precision == "auto"
    assert surerank.Reranker("embedding", model=str(tiny_ce)).engine_config.precision == "auto"


@pytest.mark.skipif(not has("torch", "transformers"), reason="needs the torch extra")
def test_auto_on_torch_is_fp32(tiny_ce):
    desc = surerank.Reranker("cross-encoder", model=str(tiny_ce), backend="torch").describe()
    assert desc["precision"] == "fp32" and desc["precision_auto"]["choice"] == "fp32"
    assert "torch" in desc["precision_auto"]["reason"]


def test_a_trust_artifact_fitted_under_auto_applies_under_auto(tiny_ce, monkeypatch, tmp_path):
    from surerank.trust.artifact import TrustArtifact

    monkeypatch.setattr(drift, "AUTO_DRIFT_BOUND", 100.0)  # auto resolves to int8-fast
    ranker = surerank.Reranker("cross-encoder", model=str(tiny_ce))
    path = tmp_path / "trust.json"
    TrustArtifact(ranker=ranker.describe()).save(path)
    saved = json.loads(path.read_text())
    assert saved["fingerprint"]["precision"] == "int8-fast"  # the resolved precision, not "auto"
    assert "precision_auto" not in saved["fingerprint"]  # the figure behind it does not change scores
    monkeypatch.setattr(core, "_ENGINES", {})
    TrustArtifact.load(path).check_ranker(surerank.Reranker("cross-encoder", model=str(tiny_ce)).describe())
    # a model resolved to fp32 scores differently: refused, naming the precision
    monkeypatch.setattr(drift, "AUTO_DRIFT_BOUND", 0.5)
    monkeypatch.setattr(core, "_ENGINES", {})
    with pytest.raises(InputError, match=r"precision: fitted 'int8-fast', now 'fp32'"):
        TrustArtifact.load(path).check_ranker(surerank.Reranker("cross-encoder", model=str(tiny_ce)).describe())
