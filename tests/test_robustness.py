"""``surerank robustness`` on a small TREC DL 2019 slice: each check against a ranker whose answer is known.

Two test rankers make the expectations exact: one that keeps the input order (an extreme listwise
position bias) and one that sorts by the first-stage BM25 score in the candidate metadata (order-free).
The real ``bm25`` ranker runs through the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from surerank.cli import main
from surerank.errors import InputError
from surerank.ranker import BaseRanker
from surerank.robustness import RobustnessConfig, RobustnessResult, format_table, run_robustness
from surerank.types import Query, RankedList

N_QUERIES = 6
DEPTH = 30


class KeepOrder(BaseRanker):
    """Returns the candidates in the order given: every position effect at its strongest."""

    name = "keep-order"

    def _rank_queries(self, queries: list[Query]) -> list[RankedList]:
        return [RankedList.from_order(q, list(range(len(q.candidates))), ranker=self.name) for q in queries]


class FirstStageScore(BaseRanker):
    """Sorts by the first-stage BM25 score carried in the metadata: blind to input order and query text."""

    name = "first-stage"

    def _rank_queries(self, queries: list[Query]) -> list[RankedList]:
        return [RankedList.from_scores(q, [float(c.metadata["bm25_score"]) for c in q.candidates],
                                       ranker=self.name) for q in queries]


@pytest.fixture(scope="module")
def dl19():
    from surerank.eval.datasets import load_trec_dl

    queries, qrels = load_trec_dl(19)
    cut = [Query(text=q.text, candidates=q.candidates[:DEPTH], id=q.id, metadata=q.metadata)
           for q in queries[:N_QUERIES]]
    return cut, qrels


def robustness(*args, **kwargs) -> dict:
    """The run's typed result as its JSON document (what --output writes)."""
    return run_robustness(*args, **kwargs).to_dict()


def config(**changes) -> RobustnessConfig:
    base = {"shuffles": 3, "typo_seeds": (0, 1), "depths": (10, 20, 30), "position_list_size": 5}
    return RobustnessConfig(**{**base, **changes})


def test_order_blind_ranker_is_stable_and_typo_proof(dl19) -> None:
    queries, qrels = dl19
    result = robustness(FirstStageScore(), queries, qrels, config(), dataset="dl19")
    json.dumps(result)  # JSON-ready
    assert result["n_queries"] == N_QUERIES
    assert result["order"]["kendall_tau_mean"] == pytest.approx(1.0)
    assert result["order"]["top1_flip_rate"] == 0.0
    accuracy = result["position"]["top1_accuracy"]
    assert len(accuracy) == 5 and max(accuracy) - min(accuracy) == 0.0
    # the ranker never reads the query, so no typo can move it
    for kind, figures in result["typos"]["kinds"].items():
        assert figures["delta"] == pytest.approx(0.0), kind
        assert figures["n_queries"] == N_QUERIES and len(figures["per_seed"]) == 2
    # its clean order is the first-stage order, so every depth scores like the first stage
    for row in result["depth"]["depths"]:
        assert row["nDCG@10"] == pytest.approx(result["depth"]["first_stage"], abs=1e-9)
    # ranking by the first-stage score is BM25: on the trap slice and off it, the two figures agree
    assert result["trap"]["n_queries"] + result["trap"]["n_rest"] >= 1
    for part in ("trap", "rest"):
        if result["trap"]["ranker"][part] is not None:
            assert result["trap"]["ranker"][part] == pytest.approx(result["trap"]["bm25"][part], abs=1e-9)


def test_position_bias_and_order_flips_are_detected(dl19) -> None:
    queries, qrels = dl19
    result = robustness(KeepOrder(), queries, qrels, config(checks=("order", "position")))
    # keeping the input order puts the relevant passage first exactly when it was placed first
    assert result["position"]["top1_accuracy"] == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert result["position"]["spread"] == 1.0
    assert result["order"]["top1_flip_rate"] > 0.5
    assert abs(result["order"]["kendall_tau_mean"]) < 0.3
    assert "typos" not in result and "depth" not in result


def test_trap_slice_matches_its_definition(dl19) -> None:
    queries, qrels = dl19
    result = robustness(FirstStageScore(), queries, qrels, config(checks=("trap",)))
    expected = []
    for q in queries:
        judged = {c.id: qrels[q.id][c.id] for c in q.candidates if c.id in qrels[q.id]}
        best = {c.id: c.metadata["bm25_score"] for c in q.candidates}
        rel = [best[d] for d, g in judged.items() if g >= 2]
        non = [best[d] for d, g in judged.items() if g == 0]
        if rel and non and max(non) > max(rel):
            expected.append(q.id)
    assert result["trap"]["qids"] == expected
    assert result["trap"]["n_queries"] + result["trap"]["n_rest"] <= N_QUERIES


def test_typos_are_the_same_on_a_second_run(dl19) -> None:
    queries, qrels = dl19
    first = robustness(FirstStageScore(), queries, qrels, config(checks=("typos",)))
    again = robustness(FirstStageScore(), queries, qrels, config(checks=("typos",)))
    assert first["typos"]["examples"] == again["typos"]["examples"]
    assert all(e["query"] != e["typo"] for e in first["typos"]["examples"])


def test_typo_deltas_compare_equal_depths(dl19) -> None:
    queries, qrels = dl19
    result = robustness(KeepOrder(), queries, qrels, config(checks=("typos",), typo_depth=10))
    assert result["typos"]["depth"] == 10
    # keeping the first-stage order at depth 10 or 30 gives the same nDCG@10, typo or not
    for figures in result["typos"]["kinds"].values():
        assert figures["clean"] == pytest.approx(result["clean"]["nDCG@10"])
        assert figures["delta"] == pytest.approx(0.0)


def test_bad_configuration_names_the_field(dl19) -> None:
    queries, qrels = dl19
    with pytest.raises(InputError, match="checks: unknown nope"):
        robustness(KeepOrder(), queries, qrels, config(checks=("nope",)))
    with pytest.raises(InputError, match="shuffles must be at least 1"):
        robustness(KeepOrder(), queries, qrels, config(shuffles=0))
    with pytest.raises(InputError, match="no query has both candidates and relevance judgments"):
        robustness(KeepOrder(), queries, {}, config())


def test_cli_runs_bm25_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bm25.json"
    code = main(["robustness", "bm25", "--dataset", "dl19", "--max-queries", "4", "--depth", "20",
                 "--shuffles", "2", "--typo-seeds", "0", "--typo-kinds", "swap,keyboard",
                 "--depths", "10,20", "--list-size", "4", "--output", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert (result["kind"], result["version"]) == ("surerank.robustness", 1) and result["ranker"] == "bm25"
    assert result["n_queries"] == 4 and set(result["typos"]["kinds"]) == {"swap", "keyboard"}
    assert 0.0 <= result["clean"]["nDCG@10"] <= 1.0
    assert np.isfinite(result["order"]["kendall_tau_mean"])
    printed = capsys.readouterr().out
    assert "order: top-1 flip rate" in printed and "typo keyboard" in printed
    assert format_table([RobustnessResult.from_dict(result)]).splitlines()[0].split()[-1] == "bm25"


def test_cli_rejects_unknown_dataset(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["robustness", "bm25", "--dataset", "nowhere.json"]) == 2
    assert "neither a known dataset" in capsys.readouterr().err


def test_one_call_gives_the_same_figures_as_one_call_per_check(dl19) -> None:
    from surerank.registry import create

    queries, qrels = dl19
    batched = robustness(create("bm25"), queries[:3], qrels, config(one_call=True))
    separate = robustness(create("bm25"), queries[:3], qrels, config(one_call=False))
    for part in ("clean", "order", "position", "typos", "trap", "depth"):
        for key in batched[part]:
            if key != "seconds":
                assert batched[part][key] == separate[part][key], (part, key)
