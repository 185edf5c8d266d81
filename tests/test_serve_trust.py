"""surerank extras over HTTP with a real trust artifact: calibrated probabilities, keep flags from the
fitted conformal cutoff and abstention, equal to applying the artifact in-process; and a server refuses
an artifact fitted for another ranker configuration."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from serve_support import Server, server_env
from surerank.eval.datasets import data_root

DL = data_root() / "trec-dl"  # $SURERANK_DATA, else ../shared/data


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    import surerank
    from surerank.formats import read_qrels, read_rankgpt_json
    from surerank.trust import fit_trust
    from surerank.types import Query

    if not (DL / "dl19-bm25-top100.json").exists():
        pytest.skip("TREC DL data not available")
    queries = [Query(text=q.text, candidates=q.candidates[:20], id=q.id)
               for q in read_rankgpt_json(DL / "dl19-bm25-top100.json")[:10]]
    ranker = surerank.Reranker("bm25")
    lists = ranker.rank_many(queries)
    trust = fit_trust(lists, read_qrels(DL / "qrels.dl19-passage.txt"), ranker.describe(),
                      calibration="platt", abstention="max", abstain_rate=0.2, cutoff_alpha=0.3)
    path = tmp_path_factory.mktemp("trust") / "bm25.trust.json"
    trust.save(path)
    return path, trust, queries[0]


def test_probabilities_and_keep_flags_match_the_artifact(artifact):
    import surerank

    path, trust, query = artifact
    docs = [c.text for c in query.candidates]
    expected = surerank.Reranker("bm25").rank(query.text, docs)
    trust.apply([expected])
    server = Server("--model", "cal=bm25", "--option", f"cal.calibration={path}")
    try:
        response = httpx.post(f"{server.url}/v2/rerank", timeout=60, json={
            "query": query.text, "documents": docs, "surerank": {"probability": True, "keep": True}})
        assert response.status_code == 200, response.text
        body = response.json()
        assert [r["index"] for r in body["results"]] == [i.index for i in expected.items]
        assert [r["probability"] for r in body["results"]] == pytest.approx([i.probability for i in expected.items])
        assert [r["keep"] for r in body["results"]] == [i.keep for i in expected.items]
        assert body["surerank"]["abstain"] == expected.abstain
        assert body["surerank"]["cutoff"]["kept"] == sum(i.keep for i in expected.items)
        plain = httpx.post(f"{server.url}/v2/rerank", timeout=60, json={"query": query.text, "documents": docs})
        assert "probability" not in plain.json()["results"][0]  # extras only when asked for
        models = httpx.get(f"{server.url}/v1/models", timeout=10).json()["data"]
        assert models[0]["calibrated"] is True
    finally:
        server.stop()


def test_artifact_for_another_ranker_is_refused_at_start(artifact):
    path, _, _ = artifact
    out = subprocess.run([sys.executable, "-m", "surerank", "serve", "--model", "cal=bm25", "--option",
                          "cal.k1=2.0", "--option", f"cal.calibration={path}", "--port", "1", "--no-warmup"],
                         env=server_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "fitted for another ranker" in out.stderr and "k1" in out.stderr
