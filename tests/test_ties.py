"""Tied scores and duplicate passages (issue 12, defect 8).

trec_eval (pytrec_eval under ir_measures) orders documents with equal scores by docid, descending, and
never reads the rank column.  ``surerank rerank --qrels`` must print the figure of the order surerank
returned and say when ties exist; ``surerank eval`` keeps trec_eval's rule and says so.  The robustness
order check treats identical passages as one item, so tie-breaks between copies are not order sensitivity.

Each synthetic list below is built so that trec_eval's tie order and surerank's order disagree: the
relevant copy ``a`` comes first in the input (surerank's stable sort keeps it first), while the docid
rule puts the non-relevant copy ``z`` first.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from surerank.cli import main
from surerank.eval.metrics import evaluate
from surerank.ranker import BaseRanker
from surerank.robustness import RobustnessConfig
from surerank.robustness.checks import order_check
from surerank.types import Candidate, Query, RankedList

QRELS = {qid: {"a": 2, "z": 0, "b": 0} for qid in ("q1", "q2")}
ONE_DOWN = 1 / math.log2(3)  # nDCG@10 with the only relevant passage at rank 2 (linear gains)


def tied_query(qid: str = "q1") -> Query:
    return Query(text="cats sleep", id=qid, candidates=(
        Candidate(id="a", text="cats sleep all day long"),
        Candidate(id="z", text="cats sleep all day long"),
        Candidate(id="b", text="dogs sleep by the door"),
        Candidate(id="c", text="birds sing in the morning"),
    ))


def test_trec_eval_breaks_ties_by_docid_but_evaluate_lists_follows_the_returned_order() -> None:
    from surerank.eval.metrics import evaluate_lists

    query = tied_query()
    ranked = RankedList.from_scores(query, [1.0, 1.0, 0.5, 0.2])
    assert ranked.ids == ["a", "z", "b", "c"]  # stable: the input order between the tied copies
    as_trec_eval = evaluate({"q1": {i.id: i.score for i in ranked.items}}, QRELS, ("nDCG@10",))
    assert as_trec_eval.aggregate["nDCG@10"] == pytest.approx(ONE_DOWN)  # z before a: docid descending
    assert as_trec_eval.order == "trec_eval" and as_trec_eval.ties.groups == 1
    ours = evaluate_lists([ranked], QRELS, ("nDCG@10",))
    assert ours.aggregate["nDCG@10"] == pytest.approx(1.0)
    assert ours.order == "rank"
    assert (ours.ties.queries_with_ties, ours.ties.groups, ours.ties.documents) == (1, 1, 2)


def test_evaluate_ranking_takes_explicit_orders_and_rejects_repeated_ids() -> None:
    from surerank.eval.metrics import evaluate_ranking

    assert evaluate_ranking({"q1": ["z", "a"]}, QRELS, ("nDCG@10",)).aggregate["nDCG@10"] == \
        pytest.approx(ONE_DOWN)
    assert not evaluate_ranking({"q1": ["a", "z"]}, QRELS, ("nDCG@10",)).ties
    from surerank.errors import InputError

    with pytest.raises(InputError, match="q1"):
        evaluate_ranking({"q1": ["a", "a"]}, QRELS)


def test_find_ties_counts_groups_per_query() -> None:
    from surerank.eval.metrics import find_ties

    ties = find_ties({"q1": {"a": 1.0, "b": 1.0, "c": 1.0, "d": 0.5, "e": 0.5, "f": 0.1},
                      "q2": {"a": 3.0, "b": 2.0}, "q3": {}})
    assert (ties.queries, ties.queries_with_ties, ties.groups, ties.documents) == (3, 1, 2, 5)
    assert ties.describe() == "1 of 3 queries have tied scores (2 groups, 5 documents)"


def _write_jsonl(path: Path, *queries: Query) -> None:
    path.write_text("".join(json.dumps({"qid": q.id, "query": q.text,
                                        "candidates": [{"id": c.id, "text": c.text} for c in q.candidates]}) + "\n"
                            for q in queries))


def _write_qrels(path: Path) -> None:
    path.write_text("".join(f"{q} 0 {d} {g}\n" for q, docs in QRELS.items() for d, g in docs.items()))


def test_cli_rerank_prints_the_figure_of_surerank_order_and_says_ties_exist(tmp_path, capsys) -> None:
    # bm25 gives the two identical passages the same score; surerank keeps a (relevant) before z
    _write_jsonl(tmp_path / "q.jsonl", tied_query("q1"), tied_query("q2"))
    _write_qrels(tmp_path / "qrels.txt")
    out_run = tmp_path / "bm25.run"
    assert main(["rerank", "-i", str(tmp_path / "q.jsonl"), "-r", "bm25", "--qrels", str(tmp_path / "qrels.txt"),
                 "--output", str(out_run)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("bm25 "))
    assert float(row.split()[1]) == pytest.approx(1.0, abs=1e-4)  # nDCG@10 of the order surerank returned
    assert "nDCG@10 1.0000 vs input order 1.0000" in out
    assert "2 of 2 queries have tied scores (2 groups, 4 documents)" in out
    assert f"trec_eval orders tied scores by docid and gives nDCG@10 {ONE_DOWN:.4f}" in out
    lines = out_run.read_text().split()
    assert lines[2] == "a" and lines[3] == "1"  # the run file keeps surerank's rank


def test_cli_rerank_with_one_judged_query_prints_its_figures_without_a_paired_test(tmp_path, capsys) -> None:
    _write_jsonl(tmp_path / "q.jsonl", tied_query("q1"))
    _write_qrels(tmp_path / "qrels.txt")
    assert main(["rerank", "-i", str(tmp_path / "q.jsonl"), "-r", "bm25", "--qrels", str(tmp_path / "qrels.txt")]) == 0
    assert "nDCG@10 1.0000 vs input order 1.0000 (+0.0000, 1 query, no paired test)" in capsys.readouterr().out


def test_cli_eval_keeps_trec_eval_order_and_reports_ties(tmp_path, capsys) -> None:
    run = tmp_path / "tied.run"
    run.write_text("q1 Q0 a 1 1.0 t\nq1 Q0 z 2 1.0 t\nq1 Q0 b 3 0.5 t\n")
    _write_qrels(tmp_path / "qrels.txt")
    assert main(["eval", "--run", str(run), "--qrels", str(tmp_path / "qrels.txt"), "--measures", "nDCG@10",
                 "--json", str(tmp_path / "out.json")]) == 0
    out = capsys.readouterr().out
    assert f"{ONE_DOWN:.4f}" in out.splitlines()[1]  # trec_eval's figure: z before a
    assert ("tied.run: 1 of 1 queries have tied scores (1 groups, 2 documents); as in trec_eval, tied "
            "documents are ordered by docid (descending), not by the rank column") in out
    ties = json.loads((tmp_path / "out.json").read_text())["runs"][str(run)]["ties"]
    assert ties == {"order": "trec_eval", "queries": 1, "queries_with_ties": 1, "groups": 1, "documents": 2}


def test_cli_eval_says_nothing_about_ties_when_there_are_none(tmp_path, capsys) -> None:
    run = tmp_path / "strict.run"
    run.write_text("q1 Q0 a 1 3.0 t\nq1 Q0 z 2 2.0 t\n")
    _write_qrels(tmp_path / "qrels.txt")
    assert main(["eval", "--run", str(run), "--qrels", str(tmp_path / "qrels.txt")]) == 0
    assert "tied" not in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------
# The robustness order check and duplicate passages
# --------------------------------------------------------------------------------------------------


class TextScore(BaseRanker):
    """Deterministic pointwise ranker: a score from the text alone, so copies of a passage tie."""

    name = "text-score"

    def _rank_queries(self, queries: list[Query]) -> list[RankedList]:
        return [RankedList.from_scores(q, [float(len(c.text)) for c in q.candidates], ranker=self.name)
                for q in queries]


class KeepOrder(BaseRanker):
    """Returns the input order: as order-sensitive as a ranker can be."""

    name = "keep-order"

    def _rank_queries(self, queries: list[Query]) -> list[RankedList]:
        return [RankedList.from_order(q, list(range(len(q.candidates))), ranker=self.name) for q in queries]


def duplicate_queries() -> list[Query]:
    """Lists whose longest (top-scored) passage comes in three copies, another in two."""
    top = "the longest passage of all, copied three times"
    pair = "a medium passage, copied twice"  # every distinct text has its own length
    queries = []
    for n in range(4):
        texts = [top, "short", pair, top, "tiny", pair, top, f"unique passage number {n}", "mid sized one"]
        queries.append(Query(text=f"query {n}", id=f"q{n}",
                             candidates=tuple(Candidate(id=f"d{i}", text=t) for i, t in enumerate(texts))))
    return queries


def test_order_check_treats_identical_texts_as_one_item() -> None:
    config = RobustnessConfig(checks=("order",), shuffles=8, seed=3)
    result = order_check(TextScore(), duplicate_queries(), config, lambda message: None).to_dict()
    assert result["kendall_tau_mean"] == pytest.approx(1.0) and result["kendall_tau_min"] == pytest.approx(1.0)
    assert result["top1_flip_rate"] == 0.0
    assert result["duplicate_groups"] == 2 * 4 and result["duplicate_items"] == 5 * 4
    # the grouping does not hide real order sensitivity
    sensitive = order_check(KeepOrder(), duplicate_queries(), config, lambda message: None).to_dict()
    assert sensitive["kendall_tau_mean"] < 0.5 and sensitive["top1_flip_rate"] > 0.3


def test_cli_rerank_depth_writes_scores_whose_order_is_the_rank_order(tmp_path, capsys) -> None:
    # the tail beyond --depth was given n - rank + 1 (90, 89, ...), above every reranked bm25 score, so
    # trec_eval and `surerank eval` read the unscored tail first
    from surerank.eval.datasets import trec_dl_paths
    from surerank.formats import read_run

    queries_path, _ = trec_dl_paths(19)
    out = tmp_path / "depth.run"
    assert main(["rerank", "-i", str(queries_path), "-r", "bm25", "--depth", "10", "--max-queries", "3",
                 "--output", str(out)]) == 0
    ranks: dict[str, list[tuple[int, str]]] = {}
    for line in out.read_text().splitlines():
        qid, _, doc, rank, _score, _tag = line.split()
        ranks.setdefault(qid, []).append((int(rank), doc))
    for qid, docs in read_run(out).items():
        by_score = sorted(docs, key=lambda d: -docs[d])
        by_rank = [doc for _, doc in sorted(ranks[qid])]
        assert by_score[10:] == by_rank[10:] and set(by_score[:10]) == set(by_rank[:10]), qid
