"""`surerank calibrate` and the rerank trust options, end to end on real files and a real model."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pytest

from surerank.errors import InputError
from surerank.eval.datasets import data_root
from surerank.trust import TrustArtifact, cli_options
from surerank.trust.output_metrics import read_ranked_jsonl, trust_metrics
from surerank.types import Query, RankedList

DATA = data_root() / "trec-dl"  # $SURERANK_DATA, else ../shared/data
pytestmark = pytest.mark.skipif(not DATA.exists(), reason="TREC DL data not present")


def calibrate_main(argv: list[str]) -> int:
    from surerank.cli import calibrate

    parser = argparse.ArgumentParser()
    calibrate.register(parser.add_subparsers())
    args = parser.parse_args(["calibrate", *argv])
    return args.func(args)


def first_stage_lists(year: int, limit: int) -> list[RankedList]:
    from surerank.formats import read_rankgpt_json

    queries = read_rankgpt_json(DATA / f"dl{year}-bm25-top100.json")[:limit]
    return [RankedList.from_scores(q, [c.metadata["bm25_score"] for c in q.candidates], ranker="bm25")
            for q in queries]


def test_calibrate_from_a_run_file_then_apply_and_score(tmp_path, capsys):
    from surerank.formats import read_qrels, write_jsonl, write_run

    write_run(tmp_path / "dl20.run", first_stage_lists(20, 54), tag="bm25")
    artifact = tmp_path / "bm25.trust.json"
    code = calibrate_main(["--run", str(tmp_path / "dl20.run"), "--ranker", "bm25",
                           "--qrels", str(DATA / "qrels.dl20-passage.txt"), "--method", "isotonic",
                           "--abstain", "u_lin", "--abstain-rate", "0.2", "--cutoff-alpha", "0.3",
                           "--output", str(artifact)])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kind"] == "surerank.calibration" and summary["version"] == 1
    assert summary["fitted_on"]["queries"] == 54 and summary["cutoff"]["report"]["attainable"]
    from surerank.registry import create

    description = create("bm25").describe()
    saved = json.loads(artifact.read_text())
    assert saved["ranker"] == description and saved["calibration"]["method"] == "isotonic"
    assert saved["kind"] == "surerank.trust" and saved["fingerprint"] == description  # bm25: all of it counts

    # apply on DL19 as `rerank --trust` would; the order must not move
    lists = first_stage_lists(19, 43)
    order = [r.ids for r in lists]
    args = argparse.Namespace(trust=str(artifact), cutoff=None, k_min=1, k_max=None, abstain=None)
    cli_options.apply(args, lists, description)
    assert [r.ids for r in lists] == order
    assert all(i.probability is not None and i.keep is not None for r in lists for i in r)
    assert all(r.abstain is not None for r in lists)

    # written by the evaluation module's JSONL writer, read back and scored
    write_jsonl(tmp_path / "dl19.jsonl", lists, include_text=False)
    metrics = trust_metrics(read_ranked_jsonl(tmp_path / "dl19.jsonl"),
                            read_qrels(DATA / "qrels.dl19-passage.txt"))
    assert 0 <= metrics["calibration"]["ece"] < 0.2
    assert 0 < metrics["cutoff"]["mean_kept"] < 100
    assert metrics["cutoff"]["miss_rate_of_candidates"] < 0.5
    assert -1 <= metrics["abstention"]["nauc"] <= 1

    with pytest.raises(InputError, match="another ranker configuration"):
        cli_options.apply(args, lists, create("bm25", k1=0.5).describe())


@pytest.mark.parametrize(("text", "field", "message"), [
    ("median", "--cutoff", "--cutoff: 'median' is not one of conformal"),
    ("gap:2", "surerank.cutoff", "surerank.cutoff: method 'gap' takes no parameter"),
    ("zscore:x", "--cutoff", "not a number"),
    ("threshold:1.5", "--cutoff", "parameter 1.5 of 'threshold' is out of range (0 to 1)"),
    ("zscore:-1", "surerank.cutoff", "out of range (0 or more)"),
    ("mass:nan", "--cutoff", "out of range"),
])
def test_one_cutoff_reader_names_the_field_and_checks_the_range(text, field, message):
    """The command line and the service read a cutoff through the same function (it once checked ranges
    for the service only)."""
    from surerank.trust.cutoffs import parse_cutoff

    with pytest.raises(InputError, match=re.escape(message)):
        parse_cutoff(text, field)
    assert parse_cutoff(" ZScore:1.5", field) == ("zscore", 1.5)
    assert parse_cutoff("conformal", field) == ("conformal", None)


def test_adaptive_and_abstain_options_without_artifact():
    lists = first_stage_lists(19, 5)
    args = argparse.Namespace(trust=None, cutoff="zscore:1.5", k_min=2, k_max=30, abstain="gap:0.5")
    cli_options.apply(args, lists)
    for r in lists:
        kept = [i.keep for i in r]
        assert 2 <= sum(kept) <= 30 and kept == sorted(kept, reverse=True)
        assert r.abstain == (r.scores[0] - r.scores[1] < 0.5)
    with pytest.raises(InputError, match="--cutoff"):
        cli_options.apply(argparse.Namespace(trust=None, cutoff="knee", k_min=1, k_max=None,
                                             abstain=None), lists)
    with pytest.raises(InputError, match="needs --trust"):
        cli_options.apply(argparse.Namespace(trust=None, cutoff="conformal", k_min=1, k_max=None,
                                             abstain=None), lists)


def test_calibrate_with_the_real_embedding_ranker(tmp_path):
    """A 4-query x 10-candidate slice of DL20 through the embedding ranker, then applied to DL19."""
    pytest.importorskip("onnxruntime")
    import surerank
    from surerank.formats import read_rankgpt_json

    try:
        ranker = surerank.Reranker("embedding")
    except surerank.SureRankError as error:
        pytest.skip(f"embedding ranker unavailable: {error}")
    rows = []
    for q in read_rankgpt_json(DATA / "dl20-bm25-top100.json")[:4]:
        rows.append({"qid": q.id, "query": q.text,
                     "candidates": [{"id": c.id, "text": c.text} for c in q.candidates[:10]]})
    (tmp_path / "slice.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    artifact = tmp_path / "emb.json"
    assert calibrate_main(["--input", str(tmp_path / "slice.jsonl"), "--ranker", "embedding",
                           "--qrels", str(DATA / "qrels.dl20-passage.txt"), "--method", "platt",
                           "--output", str(artifact)]) == 0
    loaded = TrustArtifact.load(artifact)
    loaded.check_ranker(ranker.describe())
    assert loaded.calibration.a > 0  # higher cosine, more likely relevant
    q19 = read_rankgpt_json(DATA / "dl19-bm25-top100.json")[0]
    ranked = ranker.rank(Query(text=q19.text, candidates=q19.candidates[:10], id=q19.id))
    ids, scores = ranked.ids, ranked.scores
    loaded.apply([ranked])
    assert ranked.ids == ids and ranked.scores == scores
    probs = [i.probability for i in ranked]
    assert np.all(np.diff(probs) <= 1e-12)  # monotone in the score, so non-increasing down the list


def test_rerank_with_trust_then_eval_reports_it(tmp_path, capsys):
    """The real command line: calibrate (bm25 over a DL20 slice) → rerank --trust → eval of the JSONL."""
    from surerank.cli import main
    from surerank.formats import read_rankgpt_json

    def slice_file(year: int, n: int) -> Path:
        rows = [{"qid": q.id, "query": q.text, "candidates": [{"id": c.id, "text": c.text}
                                                               for c in q.candidates[:30]]}
                for q in read_rankgpt_json(DATA / f"dl{year}-bm25-top100.json")[:n]]
        path = tmp_path / f"dl{year}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path

    artifact = tmp_path / "bm25.trust.json"
    assert main(["calibrate", "--input", str(slice_file(20, 20)), "--ranker", "bm25",
                 "--qrels", str(DATA / "qrels.dl20-passage.txt"), "--abstain", "max",
                 "--cutoff-alpha", "0.3", "--output", str(artifact)]) == 0
    out = tmp_path / "dl19.bm25.jsonl"
    assert main(["rerank", "--input", str(slice_file(19, 8)), "--ranker", "bm25", "--trust", str(artifact),
                 "--output", str(out)]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert all("probability" in c and "keep" in c for r in lines for c in r["candidates"])
    assert all(r["abstain"] in (True, False) for r in lines)
    report = tmp_path / "eval.json"
    qids = {r["qid"] for r in lines}  # judgments of the slice only (eval.metrics wants run ⊇ qrels)
    qrels = tmp_path / "slice.qrels"
    qrels.write_text("".join(x + "\n" for x in (DATA / "qrels.dl19-passage.txt").read_text().splitlines()
                             if x.split()[0] in qids))
    capsys.readouterr()
    assert main(["eval", "--run", str(out), "--qrels", str(qrels), "--json", str(report)]) == 0
    printed = capsys.readouterr()
    assert "ECE(15 bins)" in printed.out + printed.err
    trust = json.loads(report.read_text())["runs"][str(out)]["trust"]
    assert set(trust) >= {"calibration", "cutoff", "abstention"}
    # an artifact fitted for other ranker options is refused by rerank, with a clear message
    code = main(["rerank", "--input", str(slice_file(19, 2)), "--ranker", "bm25", "--option", "k1=0.5",
                 "--trust", str(artifact), "--output", str(tmp_path / "x.jsonl")])
    assert code == 2
    assert "another ranker configuration" in capsys.readouterr().err
