"""The command line as a user runs it: a real subprocess, real files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from surerank.cli import COMMANDS
from surerank.eval.datasets import trec_dl_paths
from surerank.formats import read_jsonl, read_run


def surerank(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "surerank", *map(str, args)], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command, capsys):
    from surerank.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert "usage: surerank" in out and command in out


def test_rankers_lists_each_with_its_status():
    out = surerank("rankers").stdout
    for name in ("bm25", "embedding", "cross-encoder", "fusion", "first-stage"):
        assert name in out
    assert "ready" in out


def test_unknown_ranker_exits_2_and_lists_the_known_ones(tmp_path):
    path = tmp_path / "in.jsonl"
    write_jsonl(path, [{"qid": "1", "query": "q", "candidates": [{"id": "a", "text": "x"}]}])
    result = surerank("rerank", "--input", path, "--ranker", "bm52", check=False)
    assert result.returncode == 2
    assert "unknown ranker 'bm52'" in result.stderr and "embedding" in result.stderr and "bm25" in result.stderr


def test_missing_input_file_exits_2_naming_it(tmp_path):
    result = surerank("rerank", "--input", tmp_path / "absent.jsonl", "--ranker", "bm25", check=False)
    assert result.returncode == 2 and "file not found" in result.stderr and "absent.jsonl" in result.stderr
    assert not (tmp_path / "out.run").exists()


def test_malformed_line_exits_2_with_file_and_line_and_writes_nothing(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"qid": "1", "query": "q", "candidates": []}) + "\n" + '{"qid": "2", "query": \n')
    out = tmp_path / "out.run"
    result = surerank("rerank", "--input", path, "--ranker", "bm25", "--output", out, check=False)
    assert result.returncode == 2 and "in.jsonl:2: invalid JSON" in result.stderr
    assert not out.exists()


def test_duplicate_ids_exit_2_naming_query_and_id(tmp_path):
    path = tmp_path / "in.jsonl"
    write_jsonl(path, [{"qid": "q7", "query": "q", "candidates": [{"id": "d", "text": "x"}, {"id": "d", "text": "y"}]}])
    result = surerank("rerank", "--input", path, "--ranker", "bm25", check=False)
    assert result.returncode == 2 and "duplicate candidate id 'd'" in result.stderr and "'q7'" in result.stderr


def test_empty_candidate_lists_are_kept_not_dropped(tmp_path):
    path = tmp_path / "in.jsonl"
    write_jsonl(path, [
        {"qid": "empty", "query": "nothing retrieved", "candidates": []},
        {"qid": "full", "query": "flea life cycle",
         "candidates": [{"id": "a", "text": "stock prices"}, {"id": "b", "text": "the flea life cycle"}]},
    ])
    out = tmp_path / "out.jsonl"
    surerank("rerank", "--input", path, "--ranker", "bm25", "--output", out)
    back = read_jsonl(out)
    assert [q.id for q in back] == ["empty", "full"]
    assert back[0].candidates == () and [c.id for c in back[1].candidates] == ["b", "a"]


def test_rerank_depth_keeps_every_candidate(tmp_path):
    queries_path, qrels_path = trec_dl_paths(19)
    out = tmp_path / "depth.run"
    printed = surerank("rerank", "--input", queries_path, "--ranker", "bm25", "--depth", 10, "--max-queries", 3,
                       "--output", out, "--qrels", qrels_path).stdout
    run = read_run(out)
    assert len(run) == 3 and all(len(docs) == 100 for docs in run.values())
    assert "input order" in printed and "nDCG@10" in printed


def test_cranfield_retrieve_then_rerank_end_to_end(tmp_path, shared_data):
    cran = shared_data / "cranfield"
    queries = tmp_path / "queries.tsv"
    lines = []
    from surerank.formats import read_smart_queries

    for q in read_smart_queries(cran / "cran.qry")[:8]:
        lines.append(f"{q.id}\t{q.text}")
    queries.write_text("\n".join(lines) + "\n")
    retrieved = tmp_path / "cran.bm25.jsonl"
    out = surerank("retrieve", "--corpus", cran / "cran.all.1400", "--queries", queries, "--k", 20,
                   "--output", retrieved, "--qrels", cran / "cranqrel", "--rel-level", 1,
                   "--save-stats", tmp_path / "stats.json").stdout
    assert "indexed 1400 documents" in out and "nDCG@10" in out and "1400 documents)" in out
    lists = read_jsonl(retrieved)
    assert [q.id for q in lists] == [str(i) for i in range(1, 9)]
    assert all(len(q.candidates) == 20 for q in lists)
    reranked = surerank("rerank", "--input", retrieved, "--qrels", cran / "cranqrel", "--rel-level", 1,
                        "--output", tmp_path / "cran.embedding.run").stdout
    assert "embedding" in reranked and "nDCG@10" in reranked
    assert len(read_run(tmp_path / "cran.embedding.run")) == 8
    # bm25 with the corpus's statistics gives back the retriever's own order and figures
    again = surerank("rerank", "--input", retrieved, "--ranker", "bm25", "-o", f"stats={tmp_path / 'stats.json'}",
                     "--qrels", cran / "cranqrel", "--rel-level", 1).stdout
    assert "(+0.0000," in again


@pytest.mark.parametrize("argv", [["-v", "rankers"], ["rankers", "-v"], ["rankers", "--verbose"]])
def test_verbose_works_before_and_after_the_subcommand(argv, monkeypatch, capsys):
    import logging

    from surerank.cli import main

    levels = []
    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: levels.append(kwargs["level"]))
    assert main(argv) == 0
    assert levels == [logging.INFO]


def test_verbose_counts_add_up_across_the_subcommand(monkeypatch, capsys):
    import logging

    from surerank.cli import main

    levels = []
    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: levels.append(kwargs["level"]))
    assert main(["-v", "rankers", "-v"]) == 0
    assert levels == [logging.DEBUG]
