"""Hybrid that helps (issue 24): list bm25 with background IDF, fusion ties, learned fusion weights, train --fusion."""

from __future__ import annotations

import itertools
import json
import math
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from surerank import InputError, Reranker
from surerank.aggregate.fusion import fuse, fused_order
from surerank.cli import main
from surerank.errors import MissingDependencyError
from surerank.rankers import bm25 as bm25_module
from surerank.rankers.fusion import FusionWeights
from surerank.train.fusion import fit_fusion, fusion_ndcg

pytest.importorskip("wordfreq")

COMMON_RARE = ["people walked along the river", "platypus walked along the river"]


def test_background_idf_prefers_the_rare_word_where_list_statistics_tie():
    query = "people platypus"
    listed = Reranker("bm25", idf="list").rank(query, COMMON_RARE)
    assert listed.items[0].score == pytest.approx(listed.items[1].score)  # each term in one of two documents
    background = Reranker("bm25", idf="background").rank(query, COMMON_RARE)
    assert [item.index for item in background] == [1, 0]
    assert background.items[0].score > background.items[1].score > 0
    assert background.info["bm25_statistics"].startswith("background: wordfreq")
    assert listed.info["bm25_statistics"].startswith("list")
    assert Reranker("bm25", idf="background").describe()["statistics"] == "background"


def test_background_idf_floors_unknown_words_at_the_rarest_frequency():
    idf = bm25_module.BackgroundIDF("en")
    unknown = idf.idf("qxzvbnmplk")
    assert unknown == pytest.approx(math.log1p(1.0 / (bm25_module.BACKGROUND_SCALE * idf.floor)))
    assert unknown >= idf.idf("platypus") > idf.idf("people") > 0


def test_background_idf_without_wordfreq_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "wordfreq", None)
    bm25_module._word_frequencies.cache_clear()
    try:
        with pytest.raises(MissingDependencyError, match=r"surerank\[hybrid\]"):
            Reranker("bm25", idf="background")
    finally:
        bm25_module._word_frequencies.cache_clear()
    Reranker("bm25")  # the list statistics need no wordfreq


def test_idf_option_errors():
    with pytest.raises(InputError, match="idf: must be one of"):
        Reranker("bm25", idf="corpora")
    with pytest.raises(InputError, match='"corpus" goes with stats='):
        Reranker("bm25", idf="corpus")


def test_fusion_ties_are_broken_by_members_not_by_input_order():
    query = "people river platypus"
    docs = ["people by the river", "a platypus swims"]  # list statistics: two matches beat one; background: rare
    members = [{"name": "bm25", "idf": "list"}, {"name": "bm25", "idf": "background"}]
    orders = set()
    for perm in itertools.permutations(range(2)):
        ranked = Reranker("fusion", rankers=members, method="rrf").rank(query, [docs[i] for i in perm])
        orders.add(tuple(item.text for item in ranked))
        assert ranked.info["ties"]["groups"] == 1
        assert ranked.info["ties"]["broken_by"].startswith("the members' scores")
    assert len(orders) == 1  # the members disagree, RRF ties, and the input order does not decide
    first = Reranker("bm25", idf="list").rank(query, docs).items[0].text
    assert orders.pop()[0] == first  # equal weights: the member listed first decides
    heavier = Reranker("fusion", rankers=members, method="rrf", weights=[0.5, 1.0]).rank(query, docs)
    assert heavier.items[0].text == Reranker("bm25", idf="background").rank(query, docs).items[0].text
    by_input = Reranker("fusion", rankers=members, method="rrf", tie_break="input").rank(query, docs)
    assert by_input.info["ties"]["broken_by"] == "input order" and by_input.items[0].index == 0


distinct = st.lists(st.integers(-1000, 1000), min_size=2, max_size=8, unique=True)


@settings(max_examples=40, deadline=None)
@given(distinct, st.data())
def test_fused_order_is_a_permutation_independent_of_input_order(a, data):
    ids = [f"d{i}" for i in range(len(a))]
    b = data.draw(st.permutations(a))
    lists = [dict(zip(ids, map(float, a))), dict(zip(ids, map(float, b)))]
    fused = fuse(lists, method="rrf")
    order, _ = fused_order(ids, fused, lists)
    assert sorted(order) == sorted(ids)
    assert all(fused[x] >= fused[y] for x, y in itertools.pairwise(order))
    shuffled = data.draw(st.permutations(ids))
    assert fused_order(shuffled, fused, lists)[0] == order


@settings(max_examples=40, deadline=None)
@given(distinct, distinct, st.floats(0.0, 5.0), st.floats(0.01, 5.0))
def test_z_combsum_order_ignores_weight_scale_and_affine_member_scores(a, b, w0, w1):
    n = min(len(a), len(b))
    ids = [f"d{i}" for i in range(n)]
    lists = [dict(zip(ids, map(float, a[:n]))), dict(zip(ids, map(float, b[:n])))]
    fused = fuse(lists, method="combsum", norm="zscore", weights=[w0, w1])
    doubled = fuse(lists, method="combsum", norm="zscore", weights=[2 * w0, 2 * w1])
    assert fused_order(ids, doubled, lists, [2 * w0, 2 * w1])[0] == fused_order(ids, fused, lists, [w0, w1])[0]
    shifted = [lists[0], {d: 3.0 * v + 7.0 for d, v in lists[1].items()}]
    again = fuse(shifted, method="combsum", norm="zscore", weights=[w0, w1])
    for doc in ids:  # z-scores forget a member's scale and offset
        assert again[doc] == pytest.approx(fused[doc], abs=1e-9)


def synthetic_split(seed: int, queries: int = 30, docs: int = 20):
    """Two members that each see the grades through independent noise: together they see them better."""
    rng = np.random.default_rng(seed)
    runs: list[dict] = [{}, {}]
    qrels = {}
    for q in range(queries):
        grades = rng.choice([0, 0, 0, 1, 2], size=docs)
        ids = [f"q{q}d{i}" for i in range(docs)]
        qrels[f"q{q}"] = {d: int(g) for d, g in zip(ids, grades)}
        for run, noise in zip(runs, (1.0, 1.5)):
            run[f"q{q}"] = {d: float(g + rng.normal(0, noise)) for d, g in zip(ids, grades)}
    return runs, qrels


def test_fit_improves_ndcg_and_the_weights_file_round_trips(tmp_path):
    runs, qrels = synthetic_split(0)
    fitted = fit_fusion(runs, qrels, ["first-stage", {"name": "bm25", "idf": "background"}])
    report = fitted.fit
    assert report["fitted"] > max(report["members_alone"])
    assert report["fitted"] >= report["equal_weights"]
    dev = np.mean(list(fusion_ndcg(runs, qrels, fitted.weights).values()))
    assert dev == pytest.approx(report["fitted"], abs=1e-4)
    assert max(fitted.weights) == 1.0 and min(fitted.weights) >= 0
    held_out_runs, held_out = synthetic_split(1)  # fitted on one split, better than either member on another
    alone = [np.mean(list(fusion_ndcg(held_out_runs, held_out, w).values())) for w in ([1, 0], [0, 1])]
    assert np.mean(list(fusion_ndcg(held_out_runs, held_out, fitted.weights).values())) > max(alone)

    path = tmp_path / "w.json"
    fitted.save(path)
    assert json.loads(path.read_text())["kind"] == "surerank.fusion-weights"
    assert FusionWeights.load(path) == fitted
    ranker = Reranker("fusion", weights=str(path))
    assert ranker.describe()["weights"] == fitted.weights and ranker.method == "combsum" and ranker.norm == "zscore"
    assert [m.describe()["ranker"] for m in ranker.members] == ["first-stage", "bm25"]
    path.write_text(json.dumps({**fitted.to_dict(), "weights": [1.0]}))
    with pytest.raises(InputError, match="field 'weights' must be a list of 2 numbers"):
        Reranker("fusion", weights=str(path))


def write_dev_files(folder):
    """Six queries whose relevant passage holds a rare query word, and a common-word distractor first."""
    topics = ["platypus", "aardvark", "narwhal", "axolotl", "pangolin", "quokka"]
    lines, qrels = [], []
    for i, animal in enumerate(topics):
        candidates = [{"id": f"q{i}-c", "text": "people often walk the river in the town"},
                      {"id": f"q{i}-r", "text": f"the {animal} lives near the water"},
                      {"id": f"q{i}-n", "text": "nothing to see here at all"}]
        lines.append(json.dumps({"qid": f"q{i}", "query": f"people {animal} river", "candidates": candidates}))
        qrels.append(f"q{i} 0 q{i}-r 2")
    (folder / "dev.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "dev.qrels").write_text("\n".join(qrels) + "\n")


def test_train_fusion_end_to_end(tmp_path, capsys):
    write_dev_files(tmp_path)
    out = tmp_path / "hybrid.weights.json"
    members = json.dumps(["first-stage", {"name": "bm25", "idf": "background"}])
    rc = main(["train", "--fusion", "--input", str(tmp_path / "dev.jsonl"), "--qrels", str(tmp_path / "dev.qrels"),
               "--rankers", members, "--output", str(out)])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["fit"]["fitted"] > summary["fit"]["members_alone"][0]  # the input order puts distractors first
    weights = FusionWeights.load(out)
    assert weights.weights == summary["weights"] and weights.members == json.loads(members)
    ranked = Reranker("fusion", weights=str(out)).rank("people quokka river", [
        "people often walk the river in the town", "the quokka lives near the water"])
    assert ranked.items[0].index == 1
    rc = main(["train", "--fusion", "--run", str(tmp_path / "missing.run"), "--qrels", str(tmp_path / "dev.qrels"),
               "--rankers", members, "--output", str(out)])
    assert rc == 2 and "--run: 1 runs for 2 rankers" in capsys.readouterr().err


def test_readme_flea_example_hybrid_preset_and_the_reported_rrf_tie():
    docs = ["The stock market closed higher today.", "An adult flea lives two to three months on a host."]
    preset = Reranker("fusion", preset="hybrid").rank("how long do fleas live", docs)
    assert preset.items[0].index == 1 and preset.info["ties"]["groups"] == 0
    assert Reranker("fusion", preset="hybrid").describe()["preset"] == "hybrid"
    # the old line: first-stage without retriever scores is the input order, so RRF ties, and info says so
    rrf = Reranker("fusion", rankers=["first-stage", "embedding"], method="rrf").rank("how long do fleas live", docs)
    assert rrf.info["ties"]["groups"] == 1 and rrf.items[0].score == rrf.items[1].score
    with pytest.raises(InputError, match="a preset or weights, not both"):
        Reranker("fusion", preset="hybrid", weights=[1.0, 1.0])
