"""Metrics against the known figures and against ranx, an independent implementation."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from surerank import InputError
from surerank.eval.datasets import trec_dl_paths
from surerank.eval.metrics import evaluate, paired_test, to_ir_measure
from surerank.formats import read_qrels, read_run, write_run_dict


def trec_eval_order(docs):
    ordered = sorted(docs, key=lambda d: (docs[d], d), reverse=True)
    return {d: float(len(ordered) - i) for i, d in enumerate(ordered)}


def bm25_run(queries):
    return {q.id: {c.id: c.metadata["bm25_score"] for c in q.candidates} for q in queries}


@pytest.mark.parametrize("year,expected", [(19, 0.5058), (20, 0.4796)])
def test_cli_eval_reproduces_bm25_ndcg_and_matches_ranx(tmp_path, year, expected):
    from ranx import Qrels, Run
    from ranx import evaluate as ranx_evaluate

    from surerank.formats import read_rankgpt_json

    queries_path, qrels_path = trec_dl_paths(year)
    run_path = tmp_path / f"dl{year}.bm25.run"
    write_run_dict(run_path, bm25_run(read_rankgpt_json(queries_path)), tag="bm25")
    json_path = tmp_path / "metrics.json"
    out = subprocess.run(
        [sys.executable, "-m", "surerank", "eval", "--run", str(run_path), "--qrels", str(qrels_path),
         "--json", str(json_path)], capture_output=True, text=True, check=True,
    ).stdout
    assert f"{expected:.4f}" in out
    import json

    ours = json.loads(json_path.read_text())["runs"][str(run_path)]["aggregate"]
    assert round(ours["nDCG@10"], 4) == expected

    # ranx with TREC DL's binary relevance (grade >= 2) for MAP, MRR@10 and Recall@100
    qrels = read_qrels(qrels_path)
    run = read_run(run_path)
    # BM25 scores tie; trec_eval breaks ties by document id, descending. Give ranx that same order.
    judged = {q: trec_eval_order(d) for q, d in run.items() if q in qrels}
    binary = Qrels({q: {d: int(g >= 2) for d, g in docs.items()} for q, docs in qrels.items() if q in judged})
    reference = ranx_evaluate(binary, Run(judged), ["map", "mrr@10", "recall@100"])
    assert ours["MAP"] == pytest.approx(reference["map"], abs=1e-6)
    assert ours["MRR@10"] == pytest.approx(reference["mrr@10"], abs=1e-6)
    assert ours["R@100"] == pytest.approx(reference["recall@100"], abs=1e-6)


def test_ndcg_matches_ranx_trec_convention(dl19):
    """ranx's ndcg@k uses gain = grade (trec_eval's convention), like ours."""
    from ranx import Qrels, Run
    from ranx import evaluate as ranx_evaluate

    queries, qrels = dl19
    run = {q: trec_eval_order(d) for q, d in bm25_run(queries).items()}
    ours = evaluate(run, qrels, ["nDCG@10", "P@10"], rel_level=2)
    judged = {q: d for q, d in qrels.items() if q in run}
    assert ours.aggregate["nDCG@10"] == pytest.approx(ranx_evaluate(Qrels(judged), Run(run), "ndcg@10"), abs=1e-6)
    binary = Qrels({q: {d: int(g >= 2) for d, g in docs.items()} for q, docs in judged.items()})
    assert ours.aggregate["P@10"] == pytest.approx(ranx_evaluate(binary, Run(run), "precision@10"), abs=1e-6)


grades = st.integers(0, 3)
doc_ids = st.sampled_from([f"d{i}" for i in range(12)])


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(doc_ids, grades, min_size=1),
    # scores on a 0.01 grid: pytrec_eval (like trec_eval) compares scores at limited precision
    st.dictionaries(doc_ids, st.integers(-10_000, 10_000).map(lambda x: x / 100), min_size=1).filter(
        lambda d: len(set(d.values())) == len(d)),
)
def test_per_query_values_match_ranx_on_random_rankings(qrels_docs, run_docs):
    from ranx import Qrels, Run
    from ranx import evaluate as ranx_evaluate

    if not any(g >= 2 for g in qrels_docs.values()):
        return
    ours = evaluate({"q": run_docs}, {"q": qrels_docs}, ["MAP", "MRR@10", "R@5", "nDCG@5"])
    binary = Qrels({"q": {d: int(g >= 2) for d, g in qrels_docs.items()}})
    ref = ranx_evaluate(binary, Run({"q": run_docs}), ["map", "mrr@10", "recall@5"])
    assert ours.aggregate["MAP"] == pytest.approx(ref["map"], abs=1e-6)
    assert ours.aggregate["MRR@10"] == pytest.approx(ref["mrr@10"], abs=1e-6)
    assert ours.aggregate["R@5"] == pytest.approx(ref["recall@5"], abs=1e-6)
    if any(g > 0 for g in qrels_docs.values()):
        ref_ndcg = ranx_evaluate(Qrels({"q": qrels_docs}), Run({"q": run_docs}), "ndcg@5")
        assert ours.aggregate["nDCG@5"] == pytest.approx(ref_ndcg, abs=1e-6)


def test_qrels_matching_no_query_is_an_error_not_a_zero(dl19):
    queries, _ = dl19
    with pytest.raises(InputError, match="none of the 43 query ids in the run appear in the judgments"):
        evaluate(bm25_run(queries), {"999999": {"x": 1}})


def test_cli_eval_with_foreign_qrels_fails_clearly(tmp_path, dl19):
    queries, _ = dl19
    run_path = tmp_path / "r.run"
    write_run_dict(run_path, bm25_run(queries))
    qrels_path = tmp_path / "other.qrels"
    qrels_path.write_text("1 0 doc 1\n2 0 doc 0\n")
    result = subprocess.run([sys.executable, "-m", "surerank", "eval", "--run", str(run_path),
                             "--qrels", str(qrels_path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "none of the 43 query ids" in result.stderr


def test_unknown_measure_is_named():
    with pytest.raises(InputError, match="unknown measure 'F1'"):
        to_ir_measure("F1")
    with pytest.raises(InputError, match="needs a cutoff"):
        to_ir_measure("R")


def test_paired_tests_detect_a_consistent_gain_and_not_noise():
    a = {str(i): 0.5 + 0.01 * (i % 3) + 0.05 for i in range(30)}
    b = {str(i): 0.5 + 0.01 * (i % 3) for i in range(30)}
    for kind in ("t-test", "permutation"):
        assert paired_test(a, b, test=kind).p_value < 0.01
        assert paired_test(b, b, test=kind).p_value > 0.5
