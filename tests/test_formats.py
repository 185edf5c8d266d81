from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from surerank import InputError, Query, RankedList
from surerank.formats import (
    lists_to_run,
    read_cranfield,
    read_jsonl,
    read_qrels,
    read_queries,
    read_run,
    write_jsonl,
    write_run,
)


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "in.jsonl"
    good = json.dumps({"qid": "1", "query": "q", "candidates": [{"id": "a", "text": "x"}]})
    path.write_text(good + "\n" + good.replace('"1"', '"2"') + "\n{not json\n")
    with pytest.raises(InputError, match=rf"{path.name}:3: invalid JSON"):
        read_jsonl(path)
    path.write_text(good + "\n" + json.dumps({"qid": "2", "candidates": []}) + "\n")
    with pytest.raises(InputError, match=r":2: field 'query'"):
        read_jsonl(path)
    path.write_text(json.dumps({"qid": "3", "query": "q", "candidates": [{"id": "a"}]}) + "\n")
    with pytest.raises(InputError, match=r":1: candidates\[0\] \(id 'a'\): field 'text' is missing"):
        read_jsonl(path)


def test_duplicate_candidate_ids_in_a_file_name_the_line(tmp_path):
    path = tmp_path / "dup.jsonl"
    record = {"qid": "9", "query": "q", "candidates": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(InputError, match=r"dup.jsonl:1: query '9': duplicate candidate id 'a'"):
        read_jsonl(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(InputError, match=r"file not found: .*nope.jsonl"):
        read_queries(tmp_path / "nope.jsonl")
    with pytest.raises(InputError, match="qrels file not found"):
        read_qrels(tmp_path / "qrels.txt")


def test_unknown_input_format_says_which_are_known(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("a,b\n")
    with pytest.raises(InputError, match=r"\.jsonl"):
        read_queries(path)


def test_malformed_run_and_qrels_lines(tmp_path):
    run = tmp_path / "x.run"
    run.write_text("1 Q0 d1 1 2.0 tag\n1 Q0 d2 2 abc tag\n")
    with pytest.raises(InputError, match=r"x.run:2: score 'abc'"):
        read_run(run)
    qrels = tmp_path / "q.txt"
    qrels.write_text("1 0 d1 1\n1 0 d2 x\n")
    with pytest.raises(InputError, match=r"q.txt:2: malformed qrels line .*grade must be an integer"):
        read_qrels(qrels)
    qrels.write_text("1 0 d1 1\n1 d3\n")
    with pytest.raises(InputError, match=r"q.txt:2: malformed qrels line .*expected 4 fields"):
        read_qrels(qrels)


ids = st.text(alphabet="abcdefgh0123456789", min_size=1, max_size=6)


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(ids, st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=8), max_size=5))
def test_run_file_roundtrip(tmp_path_factory, per_query):
    path = tmp_path_factory.mktemp("runs") / "r.run"
    lists = [
        RankedList.from_scores(Query.from_texts("q", [f"d{i}" for i in range(len(s))], id=qid), s)
        for qid, s in per_query.items()
    ]
    write_run(path, lists)
    back = read_run(path)
    expected = lists_to_run(lists)
    assert back.keys() == expected.keys()
    for qid in expected:
        assert back[qid].keys() == expected[qid].keys()
        for doc, score in expected[qid].items():
            assert back[qid][doc] == pytest.approx(score, rel=1e-7, abs=1e-30)


def test_jsonl_output_reads_back_as_input(tmp_path):
    q = Query.from_texts("what", [{"id": "a", "text": "first"}, {"id": "b", "text": "second"}], id="7")
    ranked = RankedList.from_scores(q, [0.1, 0.9])
    ranked.items[0].probability = 0.8
    write_jsonl(tmp_path / "out.jsonl", [ranked])
    back = read_jsonl(tmp_path / "out.jsonl")
    assert back[0].id == "7" and [c.id for c in back[0].candidates] == ["b", "a"]
    assert back[0].candidates[0].metadata["probability"] == 0.8
    assert back[0].candidates[0].metadata["rank"] == 1


def test_trec_dl_json_is_read_in_first_stage_order(dl19):
    queries, qrels = dl19
    assert len(queries) == 43 and all(len(q.candidates) == 100 for q in queries)
    first = queries[0].candidates
    assert [c.metadata["first_stage_rank"] for c in first[:3]] == [1, 2, 3]
    assert first[0].metadata["bm25_score"] >= first[1].metadata["bm25_score"]
    assert set(q.id for q in queries) <= set(qrels)


def test_cranfield_queries_are_numbered_by_position(shared_data):
    docs, queries, qrels = read_cranfield(shared_data / "cranfield")
    assert len(docs) == 1400 and len(queries) == 225
    assert [q.id for q in queries[:3]] == ["1", "2", "3"]
    # the .I numbers skip values, so they are not the judgment ids
    assert queries[-1].metadata["smart_id"] != "225"
    assert set(qrels) <= {q.id for q in queries}
    # grades 1..4 become gains 4..1, and -1 becomes 0
    assert set(g for docs_ in qrels.values() for g in docs_.values()) <= {0, 1, 2, 3, 4}
    assert docs[0].id == "1" and "experimental investigation" in docs[0].text


@pytest.mark.parametrize(("name", "text"), [("in.jsonl", '{"qid": "1", "query": "abc\n'),
                                            ("in.json", '[{"query": "abc')])
def test_invalid_json_message_reads_once(tmp_path, name, text):
    """json's "Unterminated string starting at" was printed with a dangling "at" ("at (column 13)", "at at")."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError) as raised:
        read_queries(path)
    message = str(raised.value)
    assert f"{name}:1: invalid JSON: " in message
    assert "starting at column" in message or "character at column" in message, message
    assert "at at" not in message and "at (" not in message, message


def test_rankgpt_hit_fields_are_checked_not_defaulted(tmp_path):
    """A hit's docid is required; score and rank are numbers when given and absent (not 0.0) when not."""
    path = tmp_path / "in.json"
    hit = {"qid": "7", "docid": "d1", "content": "x"}
    path.write_text(json.dumps([{"query": "q", "hits": [hit]}]))
    only = read_queries(path)[0].candidates[0]
    assert "bm25_score" not in only.metadata and "first_stage_rank" not in only.metadata
    for bad, field in (({"score": "high"}, "'score'"), ({"rank": None}, "'rank'"), ({"docid": None}, "'docid'")):
        path.write_text(json.dumps([{"query": "q", "hits": [{**hit, **bad}]}]))
        with pytest.raises(InputError, match=rf"in.json: query '7' \(entry 0\).*{field}"):
            read_queries(path)


def test_run_file_keeps_nearly_equal_scores_apart(tmp_path):
    """.8g used to write 0.123456789 and 0.1234567891 as the same score: a tie trec_eval broke by docid."""
    from surerank.formats import read_run, write_run
    from surerank.types import Query, RankedList

    query = Query.from_texts("q", ["a", "b", "c"], id="q1")
    ranked = RankedList.from_scores(query, [0.1234567890, 0.1234567891, 0.5])
    path = tmp_path / "run.txt"
    write_run(path, [ranked])
    scores = read_run(path)["q1"]
    assert scores["1"] > scores["0"] and len(set(scores.values())) == 3
    assert sorted(scores, key=lambda d: -scores[d]) == ranked.ids


def test_jsonl_keeps_other_query_fields_as_metadata(tmp_path):
    """A generation task's query-level fields (entry point, tests, database, references) reach the ranker."""
    from surerank.formats import read_jsonl

    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps({"qid": "t1", "query": "def f(x):", "entry_point": "f", "tests": ["assert f(1) == 2"],
                                "candidates": [{"id": "a", "text": "def f(x): return 2 * x"}]}) + "\n")
    (query,) = read_jsonl(path)
    assert query.metadata == {"entry_point": "f", "tests": ["assert f(1) == 2"]}
