"""surerank.train's RankNet over a teacher's ranking and its bce-mix loss (judgments where they exist, the
teacher's soft labels elsewhere), on tiny random-weight students (CPU, a few seconds each).

The comparison-based teacher is surerank's pairwise LLM ranker over real HTTP against the loopback stand-in
server (a deterministic word-overlap judge): its output is a ranking, and its labels must follow it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

pytest.importorskip("sentence_transformers")
pytest.importorskip("accelerate")
pytest.importorskip("datasets")

from surerank.errors import InputError
from surerank.ranker import BaseRanker
from surerank.testing.judge import word_overlap
from surerank.testing.llm_server import StandInServer
from surerank.train.examples import labels_from_teacher, mixed_examples, soft_labels, tied_rank_labels
from surerank.types import Candidate, Query, RankedList
from test_train import STOP, StopwordTeacher, config, lists, tiny

FINITE = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(FINITE, min_size=1, max_size=40))
def test_soft_labels_are_in_unit_interval_and_keep_the_lists_order(scores: list[float]) -> None:
    labels = soft_labels(scores)
    assert len(labels) == len(scores)
    assert all(0.0 <= v <= 1.0 for v in labels)
    for i in range(len(scores)):
        for j in range(len(scores)):
            if scores[i] > scores[j]:
                assert labels[i] >= labels[j]
            elif scores[i] == scores[j]:
                assert labels[i] == labels[j]


@settings(max_examples=100, deadline=None)
@given(st.lists(FINITE, min_size=2, max_size=20, unique=True), FINITE, st.floats(min_value=0.1, max_value=100))
def test_soft_labels_ignore_the_teachers_scale_and_shift(scores: list[float], shift: float, scale: float) -> None:
    # scores the moved list can still tell apart in float64 (a gap of 1e-300 vanishes under a shift of 1e6)
    size = max(1.0, abs(shift), max(abs(s) for s in scores) * scale)
    assume(float(np.min(np.diff(sorted(scores)))) * scale > 1e-9 * size)
    moved = soft_labels([s * scale + shift for s in scores])
    assert np.allclose(moved, soft_labels(scores), atol=1e-6)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([-1.5, 0.0, 0.25, 2.0, 7.0]), min_size=1, max_size=30))
def test_tied_rank_labels_count_what_each_score_beats_or_ties(scores: list[float]) -> None:
    """By definition: a candidate's label is how many others score below or equal to it; tied pairs are the
    unordered pairs of equal scores."""
    ids = [f"d{i}" for i in range(len(scores))]
    labels, tied = tied_rank_labels(dict(zip(ids, scores)))
    for i, s in enumerate(scores):
        assert labels[ids[i]] == sum(1 for j, t in enumerate(scores) if j != i and t <= s)
    assert tied == sum(1 for i in range(len(scores)) for j in range(i) if scores[i] == scores[j])


def test_soft_labels_of_a_constant_list_are_one_half() -> None:
    assert soft_labels([3.0, 3.0, 3.0]) == [0.5, 0.5, 0.5]


def small_list() -> tuple[Query, dict[str, dict[str, int]], dict[str, dict[str, float]]]:
    q = Query(text="q", id="q1", candidates=tuple(Candidate(id=d, text=f"passage {d}") for d in "abcdef"))
    qrels = {"q1": {"a": 3, "b": 2, "c": 1, "d": 0}}  # e and f unjudged
    teacher = {"q1": {"a": 0.1, "b": 0.9, "c": 0.8, "d": 0.7, "e": 0.6, "f": -0.4}}
    return q, qrels, teacher


def test_bce_mix_labels_judged_pairs_by_judgment_and_the_rest_by_the_teacher() -> None:
    q, qrels, teacher = small_list()
    ex = mixed_examples([q], teacher, qrels, relevance_level=2)
    got = dict(zip(ex.columns["passage"], ex.columns["label"]))
    soft = dict(zip("abcdef", soft_labels([teacher["q1"][d] for d in "abcdef"])))
    # grade >= 2 relevant (TREC DL); grade 1 judged not relevant whatever the teacher says
    assert [got[f"passage {d}"] for d in "abcd"] == [1.0, 1.0, 0.0, 0.0]
    assert got["passage e"] == soft["e"] and got["passage f"] == soft["f"] and soft["e"] > soft["f"]
    info = ex.info
    assert (info["judged"], info["judged_relevant"], info["teacher"]) == (4, 2, 2)
    assert ex.pairs == 6 and info["teacher_mapping"].startswith("sigmoid of the z-score")
    level1 = dict(zip(ex.columns["passage"], mixed_examples([q], teacher, qrels, relevance_level=1).columns["label"]))
    assert level1["passage c"] == 1.0  # the threshold is the setting, not a constant


def test_bce_mix_judgment_weight_blends_the_two_sources() -> None:
    q, qrels, teacher = small_list()
    soft = dict(zip("abcdef", soft_labels([teacher["q1"][d] for d in "abcdef"])))
    cols = mixed_examples([q], teacher, qrels, judgment_weight=0.75).columns
    got = dict(zip(cols["passage"], cols["label"]))
    assert got["passage a"] == pytest.approx(0.75 + 0.25 * soft["a"])
    assert got["passage d"] == pytest.approx(0.25 * soft["d"])
    assert got["passage e"] == soft["e"]  # unjudged: the teacher alone


def test_bce_mix_counts_queries_without_judgments() -> None:
    q, _, teacher = small_list()
    ex = mixed_examples([q], teacher, {"other": {"x": 2}})
    assert ex.info["queries_without_judgments"] == 1 and ex.info["teacher"] == 6 and ex.info["judged"] == 0


class OrderOnlyTeacher(BaseRanker):
    """A comparison-style ranker: its ranking is by stop-word share, and every score it reports is 0 (the
    scores carry nothing; only the order does)."""

    name = "order-only"

    def _rank_queries(self, queries: list[Query]) -> list[RankedList]:
        out = []
        for q in queries:
            share = [sum(w.lower() in STOP for w in c.text.split()[:40]) for c in q.candidates]
            order = sorted(range(len(share)), key=lambda i: (-share[i], i))
            ranked = RankedList.from_order(q, order, ranker=self.name)
            for item in ranked.items:
                item.score = 0.0
            out.append(ranked)
        return out


def test_ranknet_labels_follow_the_teachers_order_not_its_scores(tmp_path: Path) -> None:
    from surerank.train import score_with_teacher

    queries = lists(4, 8)
    scored = score_with_teacher(OrderOnlyTeacher(), queries, tmp_path / "cache.json", whole_lists=True)
    by_order, info = labels_from_teacher(queries, scored.scores, scored.orders, "order", "ranknet")
    assert info["mode"] == "order" and "scores are not read" in info["labels"]
    for q in queries:
        ranked = OrderOnlyTeacher().rank(q)
        assert [by_order[q.id][d] for d in ranked.ids] == [7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]
    by_score, info = labels_from_teacher(queries, scored.scores, scored.orders, "scores", "ranknet")
    assert info["tied_pairs"] == 4 * 28  # all scores 0: as scores, nothing is ordered (RankNet gets no pair)
    assert all(len(set(v.values())) == 1 for v in by_score.values())


def pairwise_teacher(server: StandInServer) -> dict[str, Any]:
    return {"name": "llm-pairwise", "backend": "openai", "base_url": server.base_url, "model": "stand-in-judge",
            "sampling": "all", "max_words": None, "timeout": 5.0, "concurrency": 4}


def short_lists() -> list[Query]:
    docs = ["Solar panel output drops on short winter days.", "Bananas are rich in potassium.",
            "Cold weather can raise solar panel efficiency in winter.", "Winter tires improve grip in cold weather.",
            "Efficiency of solar panel cells depends on temperature.", "A guide to knitting warm scarves."]
    return [Query.from_texts("solar panel efficiency in cold winter", docs, id="s1"),
            Query.from_texts("winter weather grip", docs[::-1], id="s2")]


def test_a_pairwise_llm_teachers_ranking_becomes_the_ranknet_labels(tmp_path: Path) -> None:
    from surerank.train import score_with_teacher

    queries = short_lists()
    with StandInServer() as server:
        scored = score_with_teacher(pairwise_teacher(server), queries, tmp_path / "cache.json", whole_lists=True)
        calls = server.requests
    labels, _ = labels_from_teacher(queries, scored.scores, scored.orders, "order", "ranknet")
    for q in queries:
        overlap = [word_overlap(q.text, c.text) for c in q.candidates]
        truth = [q.candidates[i].id for i in sorted(range(len(overlap)), key=lambda i: (-overlap[i], i))]
        assert scored.orders[q.id] == truth  # the judge's order, which the pairwise ranker recovers exactly
        assert sorted(truth, key=lambda d: -labels[q.id][d]) == truth
        assert labels[q.id][truth[0]] == len(truth) - 1 and labels[q.id][truth[-1]] == 0.0
    assert calls == 2 * 6 * 5 == scored.cost.calls  # both orders of every pair, for both queries


def test_a_list_scored_in_parts_is_sent_again_whole_for_its_order(tmp_path: Path) -> None:
    from surerank.train import score_with_teacher

    cache, log = tmp_path / "cache.json", tmp_path / "calls.tsv"
    score_with_teacher(StopwordTeacher(str(log)), lists(3, 4), cache)  # 4 candidates a list
    grown = lists(3, 6)
    parts = score_with_teacher(StopwordTeacher(str(log)), grown, cache)  # only the 2 new candidates sent
    assert parts.cache_hits == 12 and len(log.read_text().splitlines()) == 12 + 6
    assert all(len(parts.orders[q.id]) == 4 for q in grown)  # the order of the first call only
    whole = score_with_teacher(StopwordTeacher(str(log)), grown, cache, whole_lists=True)
    assert whole.resent_whole == 3 and len(log.read_text().splitlines()) == 18 + 18
    assert all(whole.orders[q.id] == StopwordTeacher().rank(q).ids for q in grown)
    again = score_with_teacher(StopwordTeacher(str(log)), grown, cache, whole_lists=True)
    assert again.resent_whole == 0 and again.cache_hits == 18 and len(log.read_text().splitlines()) == 36
    assert json.loads(cache.read_text())["orders"][grown[0].id] == whole.orders[grown[0].id]


@pytest.fixture(scope="module")
def tiny_ce(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny(tmp_path_factory.getbasetemp() / "tiny-ce-mixed", "cross-encoder")


def test_ranknet_over_an_order_teacher_trains_and_the_card_says_so(tmp_path: Path, tiny_ce: Path) -> None:
    from surerank.train import train_model

    cfg = config(tmp_path, "cross-encoder", tiny_ce, teacher=OrderOnlyTeacher(), loss="ranknet",
                 teacher_labels="order", batch_size=2, epochs=4, eval_steps=8, learning_rate=3e-3)
    result = train_model(cfg, lists(20, 16))
    dev, data = result.card.dev, result.card.data
    losses = [e["loss"] for e in dev["evaluations"]]
    assert losses[-1] < losses[0] < dev["before_training"]["loss"], dev  # RankNet's dev loss falls throughout
    # Spearman against the teacher's order (its scores are all 0: against them it would be 0)
    assert dev["final"]["spearman_teacher"] > dev["base"]["spearman_teacher"] + 0.3, dev
    assert data["teacher_labels"]["mode"] == "order" and result.card.schedule["teacher_labels"] == "order"
    assert result.card.teacher["orders_kept"] == 20 and "RankNet" in data["loss"]


def test_bce_mix_trains_on_both_sources_and_counts_them_on_the_card(tmp_path: Path, tiny_ce: Path) -> None:
    from surerank.eval.datasets import dataset_file
    from surerank.train import train_model

    cfg = config(tmp_path, "cross-encoder", tiny_ce, loss="bce-mix", qrels=dataset_file("dl19", "qrels"),
                 epochs=3, eval_steps=10)
    result = train_model(cfg, lists(20, 16))
    dev, data = result.card.dev, result.card.data
    assert min(e["loss"] for e in dev["evaluations"]) < dev["before_training"]["loss"] - 0.05, dev
    assert dev["selected_by"] == "eval_dev_ndcg@10"  # it learns judgments too: nDCG, not the teacher's order
    sources = data["label_sources"]["train"]
    assert sources["judged"] + sources["teacher"] == data["train_pairs_per_epoch"] == data["train_examples"]
    assert sources["judged"] > 0 and sources["teacher"] > 0 and sources["relevance_level"] == 2
    assert data["teacher_labels"]["mode"] == "scores"


@pytest.mark.parametrize(("overrides", "message"), [
    ({"student": "bi-encoder", "loss": "ranknet"}, r"'ranknet' is not a bi-encoder loss \(a cross-encoder loss\)"),
    ({"loss": "bce-mix"}, r"loss bce-mix: learns from judgments; give --qrels"),
    ({"loss": "bce-mix", "teacher": None, "qrels": "q"}, r"loss bce-mix: learns from a teacher's scores"),
    ({"teacher_labels": "ranks"}, r"teacher_labels: 'ranks' is unknown; choose from scores, order"),
    ({"teacher_labels": "order", "loss": "bce", "qrels": "q"}, r"loss bce learns from judgments only"),
    ({"teacher_labels": "order", "teacher": None, "qrels": "q"}, r"'order' reads a teacher's ranked lists"),
    ({"judgment_weight": 0.5}, r"judgment_weight: only loss bce-mix"),
    ({"loss": "bce-mix", "qrels": "q", "judgment_weight": 1.5}, r"judgment_weight: must be between 0 and 1"),
    ({"loss": "bce-mix", "qrels": "q", "relevance_level": 0}, r"relevance_level: must be a positive integer"),
    ({"max_steps": 0}, r"max_steps: must be a positive integer or None"),
])
def test_bad_combinations_are_refused_naming_the_field(tmp_path: Path, overrides: dict[str, Any],
                                                       message: str) -> None:
    from surerank.train import TrainConfig

    settings_ = {"output": tmp_path / "m", "student": "cross-encoder", "teacher": "bm25", **overrides}
    with pytest.raises(InputError, match=message):
        TrainConfig(**settings_)


def test_cli_refuses_order_labels_for_a_judgment_loss(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from surerank.cli import main

    code = main(["train", "--student", "cross-encoder", "--input", "dl19", "--qrels", "dl19", "--teacher", "bm25",
                 "--loss", "bce", "--teacher-labels", "order", "--output", str(tmp_path / "m")])
    assert code == 2 and "teacher_labels: 'order'" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
