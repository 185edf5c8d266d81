"""Selectors for generated candidates: mbr, qe, vote (issue 14).

A generation task is a Query whose text is the source and whose candidates are N outputs.  Anchors: sacreBLEU's
own sentence scores for the chrF / BLEU utilities, and the `mbr` package (ZurichNLP) for the chrF MBR choice.
"""

from __future__ import annotations

import json
import logging
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from surerank import Reranker
from surerank.errors import InputError
from surerank.rankers.generated.answers import canonical_number, normalise_answer
from surerank.rankers.generated.similarity import bleu_utility, chrf_utility, token_f1
from surerank.types import Candidate, Query

sacrebleu = pytest.importorskip("sacrebleu")

WORDS = ["the", "cat", "dog", "sat", "lay", "on", "a", "mat", "rug", "quickly", "slowly", "under", "over", "red",
         "small", "big", "house", "garden", "river", "stone", "light", "dark"]


def synthetic_lists(n_lists: int, n: int, seed: int = 0) -> list[list[str]]:
    """Candidate lists made by perturbing a random sentence: word drops, swaps and substitutions."""
    rng = np.random.default_rng(seed)
    lists = []
    for _ in range(n_lists):
        base = list(rng.choice(WORDS, size=int(rng.integers(5, 12))))
        cands = []
        for _ in range(n):
            words = list(base)
            for _ in range(int(rng.integers(0, 4))):
                op = rng.integers(0, 3)
                k = int(rng.integers(0, len(words)))
                if op == 0 and len(words) > 1:
                    del words[k]
                elif op == 1 and k + 1 < len(words):
                    words[k], words[k + 1] = words[k + 1], words[k]
                else:
                    words[k] = str(rng.choice(WORDS))
            cands.append(" ".join(words))
        lists.append(cands)
    return lists


def top_index(ranked) -> int:
    return ranked.items[0].index


# ---------------------------------------------------------------------------------------------- sacreBLEU anchors

TEXTS = ["The cat sat on the mat.", "the cat sat on a mat", "A dog lay on the rug!", "", "Ünïcödé façade, naïve.",
         "the the the the", "x"]


def test_chrf_and_bleu_pairs_equal_sacrebleu_sentence_scores():
    for utility, metric in ((chrf_utility(), sacrebleu.metrics.CHRF()),
                            (chrf_utility(word_order=2), sacrebleu.metrics.CHRF(word_order=2)),
                            (bleu_utility(), sacrebleu.metrics.BLEU(effective_order=True))):
        features = utility.features(TEXTS)
        for i, hyp in enumerate(TEXTS):
            for j, ref in enumerate(TEXTS):
                want = metric.sentence_score(hyp, [ref]).score
                assert utility.pair(features[i], features[j]) == pytest.approx(want, abs=1e-9), (hyp, ref)


def _mbr_package():
    """The `mbr` package's MetricRunner (v0.2.0), with a chrF metric module equal to `evaluate`'s "chrf".

    `evaluate.load("chrf")` fetches a script from the Hugging Face hub, which is not reachable here, so the metric
    module is defined locally: sacreBLEU's CHRF corpus score of one prediction against its references, as the
    hub script computes it.  mbr 0.2.0 imports `datasets.Metric`, which datasets >= 3 no longer has; the name is
    only used in a type alias, so it is pointed at evaluate's base class.
    """
    datasets = pytest.importorskip("datasets")
    evaluate = pytest.importorskip("evaluate")
    pytest.importorskip("torch")
    if not hasattr(datasets, "Metric"):
        datasets.Metric = evaluate.EvaluationModule
    try:
        from mbr import MBRConfig
        from mbr.metrics.base import MetricRunner
    except ImportError as error:
        pytest.skip(f"the mbr package is not importable here: {error}")

    class ChrF(evaluate.Metric):
        def _info(self):
            return evaluate.MetricInfo(
                description="chrF", citation="", inputs_description="",
                features=datasets.Features({"predictions": datasets.Value("string"),
                                            "references": datasets.Sequence(datasets.Value("string"))}))

        def _compute(self, predictions, references):
            if isinstance(references[0], str):
                references = [[r] for r in references]
            per = len(references[0])
            refs = [[r[i] for r in references] for i in range(per)]
            return {"score": sacrebleu.metrics.CHRF().corpus_score(list(predictions), refs).score}

    return MBRConfig, MetricRunner, ChrF


class _Texts:
    """A stand-in tokenizer: token id i decodes to the i-th candidate text."""

    def __init__(self, texts):
        self.texts = texts

    def batch_decode(self, ids, skip_special_tokens=True):
        return [self.texts[int(row[0])] for row in ids]


def test_chrf_mbr_choice_equals_the_mbr_package():
    config_class, runner_class, chrf = _mbr_package()
    import torch

    metric = chrf()
    lists = synthetic_lists(30, 8, seed=1)
    ranker = Reranker("mbr", utility="chrf")
    for texts in lists:
        n = len(texts)
        runner = runner_class(config_class(num_samples=n, metric=metric), _Texts(texts))
        ids = tuple(torch.tensor([[i]]) for i in range(n))
        output = runner(torch.tensor([[0]]), ids, ids)
        want = int(output.scores.max(dim=-1).indices[0])
        ranked = ranker.rank("source", texts)
        assert top_index(ranked) == want, texts
        by_index = {item.index: item.score for item in ranked.items}
        assert [by_index[i] for i in range(n)] == pytest.approx(output.scores[0].tolist(), abs=1e-3)


# ---------------------------------------------------------------------------------------------- MBR

@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-50, 50), min_size=1, max_size=12))
def test_mbr_with_a_symmetric_utility_picks_the_medoid_and_computes_each_pair_once(points):
    calls = []

    def closeness(a: str, b: str) -> float:
        calls.append((a, b))
        return -abs(int(a) - int(b))

    texts = [str(p) for p in points]
    ranked = Reranker("mbr", utility=closeness, symmetric=True).rank("src", texts)
    totals = [sum(abs(p - q) for q in points) for p in points]
    medoid = int(np.argmin(totals))  # the first of tied medoids: the ranked list keeps the input order on ties
    assert top_index(ranked) == medoid
    distinct = len(set(texts))
    assert len(calls) == distinct * (distinct + 1) // 2 == ranked.cost.details["utility_calls"]
    assert len({frozenset(c) for c in calls}) == len(calls)  # no unordered pair twice


def test_asymmetric_utility_is_computed_for_every_ordered_pair_of_distinct_texts():
    texts = ["a b c", "a b", "a b c", "d"]
    ranked = Reranker("mbr", utility="chrf").rank("src", texts)
    assert ranked.cost.details["utility_calls"] == 9  # 3 distinct texts, ordered pairs with themselves
    assert ranked.cost.details["utility_pairs"] == 16
    assert ranked.items[0].score == ranked.items[1].score  # the duplicate scores the same


def test_aggregate_chrf_is_linear_and_agrees_on_clear_lists():
    lists = synthetic_lists(20, 16, seed=2)
    pairwise = Reranker("mbr", utility="chrf")
    aggregate = Reranker("mbr", utility="chrf", aggregate=True)
    agree = 0
    for texts in lists:
        a, b = pairwise.rank("s", texts), aggregate.rank("s", texts)
        agree += top_index(a) == top_index(b)
        assert b.cost.details["utility_calls"] == len(set(texts))
        assert b.info["mbr"]["aggregate"] is True
    assert agree >= 17, agree


def test_pruning_keeps_the_choice_with_fewer_utility_calls():
    lists = synthetic_lists(10, 48, seed=3)
    full = Reranker("mbr", utility="chrf")
    pruned = Reranker("mbr", utility="chrf", prune=True, seed=1)
    saved = 0
    for texts in lists:
        a, b = full.rank("s", texts), pruned.rank("s", texts)
        assert top_index(a) == top_index(b)
        saved += a.cost.details["utility_calls"] - b.cost.details["utility_calls"]
        steps = b.info["mbr"]["prune"]["steps"]
        assert steps[0] == {"references": 8, "hypotheses": 48}
        pruned_ids = set(b.info["mbr"]["prune"]["pruned"])
        scored = [item for item in b.items if item.id not in pruned_ids]
        assert {item.id for item in b.items[: len(scored)]} == {item.id for item in scored}  # survivors first
    assert saved > 0


def test_references_from_metadata_are_the_pseudo_references():
    cands = ["the cat sat on the mat", "a dog lay on the rug"]
    query = Query("src", tuple(Candidate(str(i), t) for i, t in enumerate(cands)),
                  metadata={"references": ["a dog lay on a rug", "the dog lay on the rug"]})
    ranked = Reranker("mbr", utility="chrf").rank(query)
    assert top_index(ranked) == 1
    assert ranked.info["mbr"]["references"] == "metadata" and ranked.info["mbr"]["n_references"] == 2
    bad = Query("src", query.candidates, metadata={"references": "not a list"})
    with pytest.raises(InputError, match="references"):
        Reranker("mbr").rank(bad)


def test_two_stage_qe_top_k_then_mbr():
    texts = ["the cat sat on the mat", "the cat sat on a mat", "a cat sat on the mat today",
             "stocks fell sharply", "stocks fell", "stocks rose"]
    ranked = Reranker("mbr", utility="chrf", qe="bm25", qe_top_k=3).rank("cat mat", texts)
    kept = ranked.info["mbr"]["qe"]["kept"]
    assert len(kept) == 3 and set(ranked.ids[:3]) == set(kept)
    assert ranked.cost.details["utility_pairs"] == 3 * len(texts)
    assert max(item.score for item in ranked.items[3:]) < min(item.score for item in ranked.items[:3])


def test_ranker_score_as_utility_and_token_f1():
    texts = ["the cat sat", "the cat sat down", "dogs bark"]
    ranked = Reranker("mbr", utility="ranker:bm25").rank("src", texts)
    assert ranked.info["mbr"]["utility"] == "ranker:bm25" and top_index(ranked) in (0, 1)
    assert ranked.cost.details["utility_calls"] == 9
    f1 = Reranker("mbr", utility="f1").rank("src", texts)
    assert top_index(f1) in (0, 1) and f1.items[-1].index == 2
    assert token_f1(["a", "b"], ["b", "c"]) == pytest.approx(0.5)


def test_embedding_cosine_aggregate_equals_pairwise_mean():
    texts = ["how long do fleas live", "fleas live for two to three months", "the stock market closed higher",
             "an adult flea lives up to a year"]
    pairwise = Reranker("mbr", utility="embedding").rank("src", texts)
    aggregate = Reranker("mbr", utility="embedding", aggregate=True).rank("src", texts)
    assert pairwise.ids == aggregate.ids
    assert aggregate.scores == pytest.approx(pairwise.scores, abs=1e-6)
    assert pairwise.cost.details["utility_calls"] <= len(texts) ** 2
    assert pairwise.cost.calls == len(texts)  # each text embedded once


def test_one_candidate_without_itself_as_reference_is_counted_and_warned(caplog):
    with caplog.at_level(logging.WARNING, logger="surerank.rankers.generated.mbr"):
        ranked = Reranker("mbr", utility="chrf", include_self=False).rank("src", ["only one"])
    assert ranked.info["mbr"]["no_reference"] == 1 and ranked.items[0].score == 0.0
    assert sum("no reference" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize(("options", "message"), [
    ({"utility": "nope"}, "chrf"),
    ({"utility": "bleu", "aggregate": True}, "no aggregate"),
    ({"aggregate": True, "prune": True}, "choose one"),
    ({"qe": "bm25"}, "qe_top_k"),
    ({"prune_alpha": 1.5}, "prune_alpha"),
    ({"utility": "chrf", "utility_options": {"bogus": 1}}, "bogus"),
])
def test_bad_options_name_the_option(options, message):
    with pytest.raises(InputError, match=message):
        Reranker("mbr", **options)


# ---------------------------------------------------------------------------------------------- normalisers

@given(st.integers(-10**15, 10**15))
def test_integers_in_any_spelling_normalise_to_one_key(n):
    spellings = [str(n), f"{n:,}", f"{n}.0", f"{n}.000", f"  {n} ", f"{Decimal(n):E}", f"{n}."]
    if n >= 0:
        spellings += [f"${n:,}", f"+{n}"]
    keys = {canonical_number(s) for s in spellings}
    assert keys == {str(n)}
    assert {normalise_answer(s) for s in spellings} == {str(n)}


@given(st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=-10**6, max_value=10**6),
       st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=-10**6, max_value=10**6))
def test_two_numbers_share_a_key_only_when_equal(a, b):
    ka, kb = canonical_number(str(a)), canonical_number(str(b))
    assert ka is not None and kb is not None
    assert (ka == kb) == (a == b)
    assert canonical_number(str(a) + ("00" if "." in str(a) else ".00")) == ka  # trailing zeros


@given(st.text(alphabet="abcdefgh XYZ", min_size=1, max_size=30))
def test_case_whitespace_and_punctuation_do_not_change_the_key(text):
    noisy = "  " + text.upper().replace(" ", "   ") + " ?!"
    assert normalise_answer(noisy) == normalise_answer(text)


def test_number_normalisation_edge_cases():
    assert canonical_number("1,5") is None  # not a grouped thousands separator
    assert canonical_number("-0.0") == canonical_number("0") == "0"
    assert canonical_number("50%") == "50"
    assert canonical_number("1e999999") == "1e+999999"  # stays short
    assert canonical_number("12345678901234567890123456789012") != canonical_number("12345678901234567890123456789013")
    assert normalise_answer("(42)") == "42"
    assert normalise_answer("The Eiffel Tower", articles=True) == "eiffel tower"


# ---------------------------------------------------------------------------------------------- vote

def test_vote_share_numbers_normalised_and_no_answer_last(caplog):
    texts = ["... so the answer is 1,000.", "the answer is 1000.0", "answer is 1e3", "the answer is 7", "no idea"]
    with caplog.at_level(logging.WARNING, logger="surerank.rankers.generated.vote"):
        ranked = Reranker("vote", extract=r"answer is\s+(\S+)").rank("q", texts)
    assert [i.index for i in ranked.items] == [0, 1, 2, 3, 4]
    assert ranked.scores == pytest.approx([0.6, 0.6, 0.6, 0.2, 0.0])
    info = ranked.info["vote"]
    assert info["winner"] == "1000" and info["answers"] == {"1000": 3, "7": 1} and info["no_answer"] == 1
    assert sum("no extractable answer" in r.getMessage() for r in caplog.records) == 1


def test_vote_ties_broken_by_logprob_else_input_order():
    docs = [{"id": "a", "text": "Paris", "logprob": -5.0}, {"id": "b", "text": "Lyon", "logprob": -1.0},
            {"id": "c", "text": "paris.", "logprob": -4.0}, {"id": "d", "text": "LYON", "logprob": -9.0}]
    ranked = Reranker("vote").rank("capital?", docs)
    assert ranked.ids == ["b", "d", "c", "a"]  # Lyon's best logprob -1 beats Paris' -4; within: by logprob
    assert ranked.info["vote"]["tied"] is True and ranked.info["vote"]["tie_break"] == "logprob"
    plain = Reranker("vote").rank("capital?", [d["text"] for d in docs])
    assert plain.ids == ["0", "2", "1", "3"] and plain.info["vote"]["tie_break"] == "input order"
    with pytest.raises(InputError, match="logprob"):
        Reranker("vote").rank("q", [docs[0], {"id": "x", "text": "Lyon"}])


def test_vote_callable_extractor():
    ranked = Reranker("vote", extract=lambda t: t.split("=")[-1] if "=" in t else None).rank(
        "q", ["x = 4", "y=4.0", "z = 5", "nothing"])
    assert ranked.items[0].score == pytest.approx(0.5) and ranked.info["vote"]["winner"] == "4"


# ---------------------------------------------------------------------------------------------- qe

def _dev_set(n_queries: int = 12, n: int = 6, seed: int = 0) -> list[Query]:
    """Lists where the log-probability tracks the gold quality and BM25 against the source is noise."""
    rng = np.random.default_rng(seed)
    out = []
    for q in range(n_queries):
        gold = rng.random(n)
        cands = []
        for i in range(n):
            text = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 8))))
            cands.append(Candidate(f"c{i}", text, {"logprob": float(gold[i] * 3 + rng.normal(0, 0.05)),
                                                   "gold": float(gold[i])}))
        out.append(Query(" ".join(rng.choice(WORDS, size=4)), tuple(cands), id=f"q{q}"))
    return out


def test_qe_with_one_ranker_is_that_ranker_on_the_source():
    texts = ["the cat sat on the mat", "dogs bark", "a cat on a mat"]
    qe = Reranker("qe", qe="bm25").rank("cat mat", texts)
    bm25 = Reranker("bm25").rank("cat mat", texts)
    assert qe.ids == bm25.ids and qe.scores == pytest.approx(bm25.scores)


@pytest.mark.parametrize("method", ["coordinate-ascent", "logistic"])
def test_tuned_weights_fit_save_and_load(tmp_path, method):
    dev = _dev_set()
    ranker = type(Reranker("qe", qe="bm25")).fit(dev, qe="bm25", features=["logprob", "length"], method=method)
    report = ranker.fit_report
    assert report["objective"] >= report["single_features"]["qe:bm25"]
    assert report["objective"] >= report["single_features"]["logprob"] - 1e-9
    assert report["objective"] > report["first_candidate"]
    assert abs(ranker.weights["logprob"]) == pytest.approx(max(abs(w) for w in ranker.weights.values()))
    path = tmp_path / "weights.json"
    ranker.save(path)
    saved = json.loads(path.read_text())
    assert saved["features"] == ["qe:bm25", "logprob", "length"] and saved["config"]["qe"] == ["bm25"]
    loaded = Reranker("qe", weights=str(path))
    test = _dev_set(seed=5)
    assert [r.ids for r in loaded.rank_many(test)] == [r.ids for r in ranker.rank_many(test)]


def test_qe_errors_name_the_field(tmp_path):
    with pytest.raises(InputError, match="need weights"):
        Reranker("qe", qe="bm25", features=["length"]).rank("q", ["a", "b"])
    with pytest.raises(InputError, match="'logprob'"):
        Reranker("qe", qe="bm25", features=["logprob"], weights={"logprob": 1.0}).rank("q", ["a", "b"])
    bad = tmp_path / "w.json"
    bad.write_text('{"weights": {"x": 1}}')
    with pytest.raises(InputError, match="format"):
        Reranker("qe", weights=str(bad))
    with pytest.raises(InputError, match="gold"):
        type(Reranker("qe", qe="bm25")).fit([Query("q", (Candidate("a", "x"),))], qe="bm25")


# ---------------------------------------------------------------------------------------------- CLI and service

NBEST = [
    {"qid": "s1", "query": "Die Katze sitzt auf der Matte.",
     "candidates": [{"id": "h1", "text": "The cat sits on the mat."}, {"id": "h2", "text": "The cat sat on the mat."},
                    {"id": "h3", "text": "A cat is sitting on the mat."}, {"id": "h4", "text": "Dog runs."}]},
    {"qid": "s2", "query": "Guten Morgen.",
     "candidates": [{"id": "a", "text": "Good morning."}, {"id": "b", "text": "Good morning!"},
                    {"id": "c", "text": "Morning, good."}]},
]


def test_cli_rerank_with_mbr(tmp_path):
    from surerank.cli import main

    source = tmp_path / "nbest.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in NBEST))
    out = tmp_path / "selected.jsonl"
    assert main(["rerank", "--ranker", "mbr", "-o", "utility=chrf", "--input", str(source), "--output", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    ranker = Reranker("mbr", utility="chrf")
    for record, query in zip(lines, NBEST):
        want = ranker.rank(query["query"], query["candidates"])
        assert [c["id"] for c in record["candidates"]] == want.ids
        assert record["cost"]["details"]["utility_calls"] == want.cost.details["utility_calls"]
        assert record["info"]["mbr"]["utility"] == "chrf"


def test_service_serves_mbr():
    pytest.importorskip("fastapi")
    import httpx

    from serve_support import Server

    query = NBEST[0]
    docs = [c["text"] for c in query["candidates"]]
    want = Reranker("mbr", utility="chrf").rank(query["query"], docs)
    server = Server("--model", "mbr=mbr", "--option", "mbr.utility=chrf", "--no-warmup")
    try:
        response = httpx.post(f"{server.url}/v1/rerank", json={"model": "mbr", "query": query["query"],
                                                               "documents": docs}, timeout=30)
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [r["index"] for r in results] == [item.index for item in want.items]
        assert [r["relevance_score"] for r in results] == pytest.approx(want.scores)
    finally:
        server.stop()
