"""Trust artifacts travel and are checked: fingerprint of what changes scores, schema, checks before scoring.

Issue 12, defect 5 and must-show 4: an artifact fitted with 2 threads and batch size 16 applies with 1
thread and batch size 8 and the model copied to another path (in-process, and in a subprocess whose
environment and cache differ), and is refused, naming the field, for another model or precision.
A hand-damaged artifact is refused with the field's name, never a KeyError; ``rerank --trust`` and
``calibrate`` refuse bad artifacts / judgments before anything is scored; ``calibrate`` takes several
``--input``/``--run`` and ``--qrels`` files.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from surerank.errors import InputError
from surerank.eval.datasets import data_root
from surerank.trust import TrustArtifact, fit_trust
from surerank.types import Candidate, Query, RankedList

DATA = data_root() / "trec-dl"
needs_data = pytest.mark.skipif(not DATA.exists(), reason="TREC DL data not present")
REPO = Path(__file__).resolve().parents[1]


def toy_lists(n_queries: int = 12, n_items: int = 8, seed: int = 0) -> tuple[list[RankedList], dict]:
    rng = np.random.default_rng(seed)
    lists, qrels = [], {}
    for q in range(n_queries):
        grades = rng.integers(0, 4, n_items)
        scores = grades + rng.normal(0, 1.0, n_items)
        query = Query(text=f"q{q}", id=f"q{q}", candidates=[Candidate(id=f"d{i}", text="") for i in range(n_items)])
        lists.append(RankedList.from_scores(query, scores.tolist(), ranker="toy"))
        qrels[f"q{q}"] = {f"d{i}": int(g) for i, g in enumerate(grades)}
    return lists, qrels


def full_artifact(method: str = "platt", confidence: str = "u_lin") -> dict:
    lists, qrels = toy_lists()
    return fit_trust(lists, qrels, {"ranker": "toy"}, calibration=method, abstention=confidence,
                     abstain_rate=0.25, cutoff_alpha=0.3).to_dict()


# --------------------------------------------------------------------------------------------------
# the fingerprint: what changes scores, and nothing else
# --------------------------------------------------------------------------------------------------

ENGINE = {"ranker": "embedding", "model": "/home/a/models/minilm", "model_dir": "/home/a/models/minilm",
          "backend": "onnx", "precision": "fp32", "device": "cpu", "max_length": 256, "batch_size": 16,
          "token_budget": 4096, "threads": 2, "workers": 2, "batch_invariant": True,
          "weights_sha256": "a" * 64, "tokenizer_sha256": "b" * 64, "long_documents": "truncate",
          "aggregate": "max", "pooling": "mean", "query_prefix": "", "passage_prefix": ""}


def test_fingerprint_ignores_where_and_how_the_model_runs():
    from surerank.trust.fingerprint import differences, score_fingerprint

    moved = {**ENGINE, "model": "/opt/elsewhere/minilm", "model_dir": "/opt/elsewhere/minilm",
             "batch_size": 8, "token_budget": 1024, "threads": 1, "workers": 1, "device": "cpu"}
    assert differences(score_fingerprint(ENGINE), score_fingerprint(moved)) == []
    # but every field that changes scores is compared, by name
    for field, value in (("precision", "int8"), ("max_length", 128), ("pooling", "cls"),
                         ("query_prefix", "query: "), ("weights_sha256", "c" * 64),
                         ("tokenizer_sha256", "d" * 64), ("long_documents", "passages")):
        [(name, _, now)] = differences(score_fingerprint(ENGINE), score_fingerprint({**ENGINE, field: value}))
        assert (name, now) == (field, value)


def test_batch_size_counts_when_scores_depend_on_it():
    from surerank.trust.fingerprint import differences, score_fingerprint

    int8 = {**ENGINE, "precision": "int8", "batch_invariant": False, "fp32_nodes": []}
    fields = {d[0] for d in differences(score_fingerprint(int8), score_fingerprint({**int8, "batch_size": 8}))}
    assert fields == {"batch_size"}
    fusion = {"ranker": "fusion", "members": [ENGINE, {"ranker": "bm25", "k1": 0.9}]}
    other = copy.deepcopy(fusion)
    other["members"][0]["threads"] = 7
    assert differences(score_fingerprint(fusion), score_fingerprint(other)) == []
    other["members"][1]["k1"] = 1.2
    assert [d[0] for d in differences(score_fingerprint(fusion), score_fingerprint(other))] == ["members[1].k1"]


def test_check_ranker_names_field_and_both_values(tmp_path):
    lists, qrels = toy_lists()
    artifact = fit_trust(lists, qrels, ENGINE, calibration="platt")
    loaded = TrustArtifact.load(artifact.save(tmp_path / "a.json"))
    loaded.check_ranker({**ENGINE, "threads": 1, "batch_size": 8, "model_dir": "/x", "model": "/x"})
    with pytest.raises(InputError, match=r"precision: fitted 'fp32', now 'int8'"):
        loaded.check_ranker({**ENGINE, "precision": "int8", "batch_invariant": False})
    with pytest.raises(InputError, match=r"weights_sha256: fitted 'aaaaaaaaaaaaaaaa\.\.\.', now 'cccc.*model: "
                                         r"fitted '/home/a/models/minilm', now 'other'"):
        loaded.check_ranker({**ENGINE, "weights_sha256": "c" * 64, "model": "other"})


def test_version_1_artifacts_are_still_read_and_checked_by_model_name():
    data = full_artifact()
    old = {k: v for k, v in data.items() if k not in ("kind", "fingerprint")}
    old.update(format="surerank.trust", version=1,
               ranker={k: v for k, v in ENGINE.items() if k not in ("weights_sha256", "tokenizer_sha256")})
    loaded = TrustArtifact.from_dict(old)
    loaded.check_ranker({**ENGINE, "threads": 1, "model_dir": "/elsewhere"})  # hashes not compared
    with pytest.raises(InputError, match="model: fitted"):
        loaded.check_ranker({**ENGINE, "model": "another-model"})


# --------------------------------------------------------------------------------------------------
# the schema: a damaged artifact is refused with the field's name
# --------------------------------------------------------------------------------------------------


def _drop(path: str):
    def edit(data: dict) -> None:
        *parents, last = path.split(".")
        node = data
        for p in parents:
            node = node[p]
        del node[last]
    return edit


def _set(path: str, value):
    def edit(data: dict) -> None:
        *parents, last = path.split(".")
        node = data
        for p in parents:
            node = node[p]
        node[last] = value
    return edit


DAMAGE = [
    ("abstention.model.coef", _drop("abstention.model.coef")),
    ("abstention.model.coef[1]", _set("abstention.model.coef", [0.1, "x", 0.3])),
    ("abstention.model.mean", _set("abstention.model.mean", [0.0])),
    ("abstention.model.intercept", _drop("abstention.model.intercept")),
    ("abstention.threshold", _set("abstention.threshold", "high")),
    ("abstention.confidence", _set("abstention.confidence", "psychic")),
    ("calibration.params.a", _drop("calibration.params.a")),
    ("calibration.params.b", _set("calibration.params.b", "0.5")),
    ("calibration.method", _set("calibration.method", "magic")),
    ("cutoff.k", _drop("cutoff.k")),
    ("cutoff.alpha", _set("cutoff.alpha", 1.5)),
    ("cutoff.kind", _set("cutoff.kind", None)),
    ("ranker", _set("ranker", "embedding")),
    ("fingerprint", _drop("fingerprint")),
    ("version", _set("version", 7)),
    ("kind", _set("kind", "surerank.robustness")),
]


@pytest.mark.parametrize(("field", "damage"), DAMAGE, ids=[d[0] for d in DAMAGE])
def test_damaged_artifact_names_the_field(tmp_path, field, damage):
    data = full_artifact()
    data["abstention"]["model"]["coef"] = data["abstention"]["model"]["coef"][:3]  # k=10 → keep it short
    data["abstention"]["model"].update(k=3, mean=[0.0] * 3, scale=[1.0] * 3)
    data["abstention"]["k"] = 3
    TrustArtifact.from_dict(copy.deepcopy(data))  # the undamaged document loads
    damage(data)
    path = tmp_path / "damaged.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError) as error:
        TrustArtifact.load(path)
    message = str(error.value)
    assert f"'{field}'" in message and str(path) in message, message


def test_isotonic_lengths_and_data_driven_model_are_checked():
    data = full_artifact(method="isotonic")
    data["calibration"]["params"]["y"] = data["calibration"]["params"]["y"][:-1]
    with pytest.raises(InputError, match=r"'calibration\.params\.y' must be a list of \d+ numbers"):
        TrustArtifact.from_dict(data)
    data = full_artifact()
    data["abstention"]["model"] = None
    with pytest.raises(InputError, match=r"'abstention\.model' is missing"):
        TrustArtifact.from_dict(data)


# --------------------------------------------------------------------------------------------------
# checks come before scoring; several calibration files
# --------------------------------------------------------------------------------------------------


def _slice(tmp_path: Path, year: int, n: int, depth: int = 20) -> Path:
    from surerank.formats import read_rankgpt_json

    rows = [{"qid": q.id, "query": q.text, "candidates": [{"id": c.id, "text": c.text}
                                                           for c in q.candidates[:depth]]}
            for q in read_rankgpt_json(DATA / f"dl{year}-bm25-top100.json")[:n]]
    path = tmp_path / f"dl{year}-{n}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def scoring_spy(monkeypatch):
    """Counts rank_many calls of every ranker: a check that comes 'before scoring' leaves it at 0."""
    from surerank.ranker import BaseRanker

    calls = []
    original = BaseRanker.rank_many

    def spy(self, queries, *args, **kwargs):
        calls.append(len(queries))
        return original(self, queries, *args, **kwargs)

    monkeypatch.setattr(BaseRanker, "rank_many", spy)
    return calls


@needs_data
def test_rerank_refuses_the_artifact_before_scoring(tmp_path, capsys, scoring_spy):
    from surerank.cli import main

    lists, qrels = toy_lists()
    from surerank.registry import create

    artifact = fit_trust(lists, qrels, create("bm25").describe(), calibration="platt").save(tmp_path / "t.json")
    out = tmp_path / "out.jsonl"
    code = main(["rerank", "--input", str(_slice(tmp_path, 19, 3)), "--ranker", "bm25", "--option", "k1=0.5",
                 "--trust", str(artifact), "--output", str(out)])
    assert code == 2 and "k1: fitted 0.9, now 0.5" in capsys.readouterr().err
    assert scoring_spy == [] and not out.exists()
    damaged = json.loads(artifact.read_text())
    del damaged["calibration"]["params"]["a"]
    artifact.write_text(json.dumps(damaged))
    code = main(["rerank", "--input", str(_slice(tmp_path, 19, 3)), "--ranker", "bm25",
                 "--trust", str(artifact), "--output", str(out)])
    assert code == 2 and "calibration.params.a" in capsys.readouterr().err
    assert scoring_spy == [] and not out.exists()


@needs_data
def test_calibrate_checks_judgments_and_output_before_scoring(tmp_path, capsys, scoring_spy):
    from surerank.cli import main

    dl19 = _slice(tmp_path, 19, 3)
    code = main(["calibrate", "--input", str(dl19), "--ranker", "bm25",
                 "--qrels", str(DATA / "qrels.dl20-passage.txt"), "--output", str(tmp_path / "a.json")])
    err = capsys.readouterr().err
    assert code == 2 and "has judgments in" in err and "qrels.dl20-passage.txt" in err
    code = main(["calibrate", "--input", str(dl19), "--ranker", "bm25",
                 "--qrels", str(DATA / "qrels.dl19-passage.txt"), "--output", str(tmp_path / "no" / "a.json")])
    assert code == 2 and "does not exist" in capsys.readouterr().err
    code = main(["calibrate", "--input", str(dl19), "--input", str(dl19), "--ranker", "bm25",
                 "--qrels", str(DATA / "qrels.dl19-passage.txt"), "--output", str(tmp_path / "a.json")])
    assert code == 2 and "twice in" in capsys.readouterr().err
    assert scoring_spy == []


@needs_data
def test_calibrate_on_two_years_with_repeated_options(tmp_path, capsys):
    from surerank.cli import main
    from surerank.trust import FitSummary

    out = tmp_path / "two.json"
    code = main(["calibrate", "--input", str(_slice(tmp_path, 19, 4)), "--input", str(_slice(tmp_path, 20, 5)),
                 "--qrels", str(DATA / "qrels.dl19-passage.txt"), "--qrels", str(DATA / "qrels.dl20-passage.txt"),
                 "--ranker", "bm25", "--abstain", "max", "--output", str(out)])
    assert code == 0
    summary = FitSummary.from_dict(json.loads(capsys.readouterr().out))
    assert summary.fitted_on["queries"] == 9 and summary.artifact == str(out)
    assert "dl19-4.jsonl" in summary.fitted_on["source"] and "dl20-5.jsonl" in summary.fitted_on["source"]
    assert summary.abstention is not None and summary.abstention["risk_coverage"]["coverage"][-1] == 1.0
    assert TrustArtifact.load(out).fitted_on["queries"] == 9


# --------------------------------------------------------------------------------------------------
# must-show 4: the artifact travels with the model, across threads, batch sizes, paths and processes
# --------------------------------------------------------------------------------------------------


def _copy_model(target: Path) -> Path:
    from surerank.engine.checkpoint.locate import default_model_dir

    shutil.copytree(default_model_dir(), target)
    return target


def _two_layer_model(target: Path) -> Path:
    """Another checkpoint: the first two MiniLM layers (same tokenizer, same config but the depth)."""
    from safetensors.numpy import load_file, save_file

    source = _copy_model(target)
    tensors = load_file(str(source / "model.safetensors"))
    save_file({k: v for k, v in tensors.items()
               if not (k.startswith("encoder.layer.") and int(k.split(".")[2]) >= 2)},
              str(source / "model.safetensors"))
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 2}))
    return source


@needs_data
def test_artifact_travels_across_threads_batch_size_path_and_process(tmp_path):
    pytest.importorskip("onnxruntime")
    import surerank
    from surerank.formats import read_queries

    try:
        # fp32 named: a batch size over 1 makes int8 (the default's choice for this model) batch-dependent
        fitted_with = surerank.Reranker("embedding", precision="fp32", threads=2, batch_size=16)
        fitted_with.describe()
    except surerank.SureRankError as error:
        pytest.skip(f"embedding ranker unavailable: {error}")
    fit_file, apply_file = _slice(tmp_path, 20, 6, depth=15), _slice(tmp_path, 19, 3, depth=15)
    fit_lists = fitted_with.rank_many(read_queries(fit_file))
    from surerank.formats import read_qrels

    artifact = fit_trust(fit_lists, read_qrels(DATA / "qrels.dl20-passage.txt"), fitted_with.describe(),
                         calibration="platt", abstention="max", abstain_rate=0.2)
    path = artifact.save(tmp_path / "emb.trust.json")

    # in-process: 1 thread, batch size 8, the model copied to another path
    copied = _copy_model(tmp_path / "elsewhere" / "minilm")
    here = surerank.Reranker("embedding", model=str(copied), precision="fp32", threads=1, batch_size=8)
    loaded = TrustArtifact.load(path)
    loaded.check_ranker(here.describe())
    saved = json.loads(path.read_text())
    assert saved["ranker"]["threads"] == 2 and saved["ranker"]["batch_size"] == 16  # recorded, not compared
    assert "threads" not in saved["fingerprint"] and "batch_size" not in saved["fingerprint"]
    queries = read_queries(apply_file)
    reference = fitted_with.rank_many(queries)
    moved = here.rank_many(queries)
    assert [r.ids for r in moved] == [r.ids for r in reference]
    np.testing.assert_allclose([s for r in moved for s in r.scores], [s for r in reference for s in r.scores],
                               atol=1e-5)
    loaded.apply(reference)
    loaded.apply(moved)
    expected = [i.probability for r in reference for i in r]
    np.testing.assert_allclose([i.probability for r in moved for i in r], expected, atol=1e-5)

    # refused, naming the field, for another precision and for another model
    with pytest.raises(InputError, match=r"precision: fitted 'fp32', now 'int8'"):
        loaded.check_ranker(surerank.Reranker("embedding", precision="int8").describe())
    other = _two_layer_model(tmp_path / "other" / "minilm-2l")
    with pytest.raises(InputError, match=r"weights_sha256: fitted '53aa51172d142c89\.\.\.'"):
        loaded.check_ranker(surerank.Reranker("embedding", model=str(other), precision="fp32").describe())

    # another process: one OMP/ORT thread, its own empty cache (graph rebuilt, hashes recomputed), the copy
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ORT_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "SURERANK_CACHE": str(tmp_path / "fresh-cache"), "PYTHONPATH": str(REPO / "src")}
    out = tmp_path / "applied.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "surerank.cli", "rerank", "--input", str(apply_file), "--ranker", "embedding",
         "--option", f"model={copied}", "--option", "threads=1", "--option", "batch_size=8",
         "--option", "precision=fp32",
         "--trust", str(path), "--output", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    applied = [json.loads(line) for line in out.read_text().splitlines()]
    by_id = {(r.query.id, i.id): i.probability for r in reference for i in r}
    got = [(r["qid"], c["id"], c["probability"]) for r in applied for c in r["candidates"]]
    assert len(got) == len(by_id)
    np.testing.assert_allclose([p for _, _, p in got], [by_id[(q, d)] for q, d, _ in got], atol=1e-5)
