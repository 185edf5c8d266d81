"""Batch jobs with the local engine: input formats, outputs, manifest, restart rules, bad input.

Real files and the real ``bm25`` ranker on a slice of TREC DL19; the Ray engine is tested in
``test_batch_ray.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from surerank import Reranker
from surerank.batch import BatchConfig, Manifest, run_batch
from surerank.batch.io import read_rankgpt_queries
from surerank.batch.shards import plan_shards, queries_to_table, table_to_queries
from surerank.cli import batch as batch_cli
from surerank.errors import InputError
from surerank.eval.datasets import data_root
from surerank.types import Candidate, Query

DATA = data_root() / "trec-dl"  # $SURERANK_DATA, else ../shared/data


@pytest.fixture(scope="module")
def dl19_slice() -> list[Query]:
    return list(read_rankgpt_queries(DATA / "dl19-bm25-top100.json"))[:6]


def write_jsonl(path: Path, queries: list[Query]) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        for q in queries:
            handle.write(json.dumps({"qid": q.id, "query": q.text,
                                     "candidates": [{"id": c.id, "text": c.text} for c in q.candidates]}) + "\n")
    return path


def pairs_of(table: pa.Table) -> list[tuple[str, str]]:
    return list(zip(table.column("qid").to_pylist(), table.column("docid").to_pylist(), strict=True))


def assert_exactly_once(table: pa.Table, queries: list[Query]) -> None:
    pairs = pairs_of(table)
    assert len(pairs) == len(set(pairs))
    assert set(pairs) == {(q.id, c.id) for q in queries for c in q.candidates}


def test_local_job_matches_direct_rank_many(tmp_path, dl19_slice):
    source = write_jsonl(tmp_path / "in.jsonl", dl19_slice)
    result = run_batch(BatchConfig(inputs=[source], output=tmp_path / "out.parquet", ranker="bm25",
                                   shard_pairs=250, progress=False))
    table = pq.read_table(result.output)
    assert result.shards == 3 and result.shards_ranked == 3 and result.pairs == 600
    assert_exactly_once(table, dl19_slice)
    direct = Reranker("bm25").rank_many(dl19_slice)
    expected = [(r.query.id, item.id, item.rank, item.score) for r in direct for item in r.items]
    got = list(zip(*(table.column(c).to_pylist() for c in ("qid", "docid", "rank", "score")), strict=True))
    assert got == expected
    manifest = Manifest.load(result.manifest)
    assert [s.status for s in manifest.shards] == ["done"] * 3
    assert manifest.output["rows"] == 600 and manifest.ranker == {"name": "bm25", "options": {}}


def test_trec_run_parquet_and_jsonl_inputs_agree(tmp_path, dl19_slice):
    jsonl = write_jsonl(tmp_path / "in.jsonl", dl19_slice)
    run = tmp_path / "first.run"
    passages = tmp_path / "passages.tsv"
    queries_tsv = tmp_path / "queries.tsv"
    with open(run, "w") as r, open(passages, "w") as p, open(queries_tsv, "w") as qf:
        for q in dl19_slice:
            qf.write(f"{q.id}\t{q.text}\n")
            for rank, c in enumerate(q.candidates, start=1):
                r.write(f"{q.id} Q0 {c.id} {rank} {100 - rank} bm25\n")
                p.write(f"{c.id}\t{c.text}\n")
    # pair rows, interleaved so that a query's rows are not contiguous
    rows = [(q.id, q.text, c.id, c.text) for q in dl19_slice for c in q.candidates]
    rows = rows[::2] + rows[1::2]
    pq.write_table(pa.table({k: [r[i] for r in rows] for i, k in enumerate(["qid", "query", "docid", "text"])}),
                   tmp_path / "pairs.parquet")
    outputs = {}
    for name, extra in {"jsonl": dict(inputs=[jsonl]),
                        "trec": dict(inputs=[run], passages=passages, queries=queries_tsv),
                        "parquet": dict(inputs=[tmp_path / "pairs.parquet"])}.items():
        result = run_batch(BatchConfig(output=tmp_path / f"{name}.run", ranker="bm25", progress=False,
                                       shard_pairs=300, **extra))
        outputs[name] = {}
        for line in result.output.read_text().splitlines():
            qid, _, docid, rank, score, tag = line.split()
            assert tag == "surerank-bm25"
            outputs[name][(qid, docid)] = (int(rank), float(score))
        assert len(outputs[name]) == 600
    # Parquet regroups candidates in a different order, so BM25 ties may break differently: compare scores
    assert outputs["jsonl"] == outputs["trec"]
    for key, (_, score) in outputs["jsonl"].items():
        assert outputs["parquet"][key][1] == pytest.approx(score, abs=1e-9)


def test_jsonl_output_with_text(tmp_path, dl19_slice):
    source = write_jsonl(tmp_path / "in.jsonl", dl19_slice[:2])
    result = run_batch(BatchConfig(inputs=[source], output=tmp_path / "out.jsonl", ranker="bm25",
                                   keep_text=True, progress=False))
    rows = [json.loads(line) for line in result.output.read_text().splitlines()]
    assert len(rows) == 200 and set(rows[0]) == {"qid", "docid", "rank", "score", "query", "text"}
    texts = {(q.id, c.id): c.text for q in dl19_slice[:2] for c in q.candidates}
    assert all(texts[(r["qid"], r["docid"])] == r["text"] for r in rows)


def test_restart_keeps_done_shards_and_redoes_partial_and_corrupt_ones(tmp_path, dl19_slice):
    source = write_jsonl(tmp_path / "in.jsonl", dl19_slice)
    config = BatchConfig(inputs=[source], output=tmp_path / "out.parquet", ranker="bm25", shard_pairs=100,
                         progress=False)
    first = run_batch(config)
    reference = pq.read_table(first.output)
    work = config.resolved_work_dir()
    manifest = Manifest.load(first.manifest)
    # a job that died after writing shard 2's file but before recording it, and a shard file damaged since
    manifest.shards[2].status, manifest.shards[2].sha256 = "pending", None
    manifest.save(first.manifest)
    pq.write_table(reference.slice(0, 10).append_column("junk", pa.array([1] * 10)), work / "shard-00002.parquet")
    pq.write_table(reference.slice(0, 100), work / "shard-00004.parquet")
    (work / ".shard-00005.parquet.tmp-shard").write_bytes(b"partial")
    first.output.unlink()

    second = run_batch(config)
    assert (second.shards_skipped, second.shards_ranked) == (4, 2)
    assert pq.read_table(second.output).equals(reference)
    assert not list(work.glob(".*.tmp-*"))
    third = run_batch(config)
    assert (third.shards_skipped, third.shards_ranked) == (6, 0)
    # a complete job with --clean: the output's checksum is recorded, so a rerun has nothing to do
    config.clean = True
    run_batch(config)
    assert not list(work.glob("shard-*.parquet"))
    again = run_batch(config)
    assert again.shards_ranked == 0 and pq.read_table(again.output).equals(reference)


def test_restart_refuses_a_different_job_unless_overwrite(tmp_path, dl19_slice):
    source = write_jsonl(tmp_path / "in.jsonl", dl19_slice[:2])
    config = BatchConfig(inputs=[source], output=tmp_path / "out.parquet", ranker="bm25", progress=False)
    run_batch(config)
    config.ranker_options = {"k1": 1.2}
    with pytest.raises(InputError, match="ranker or its options"):
        run_batch(config)
    write_jsonl(source, dl19_slice[:3])
    config.ranker_options = {}
    with pytest.raises(InputError, match="input files"):
        run_batch(config)
    config.overwrite = True
    assert run_batch(config).pairs == 300


def test_bad_inputs_name_the_field_and_file(tmp_path, dl19_slice):
    source = write_jsonl(tmp_path / "a.jsonl", dl19_slice[:2])
    dup = write_jsonl(tmp_path / "b.jsonl", dl19_slice[1:3])
    with pytest.raises(InputError, match="appears twice"):
        run_batch(BatchConfig(inputs=[source, dup], output=tmp_path / "o.parquet", ranker="bm25"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"qid": 1, "query": "q", "candidates": [{"id": "d1"}]}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:1: candidates\[0\].*'text'"):
        run_batch(BatchConfig(inputs=[bad], output=tmp_path / "o.parquet", ranker="bm25"))
    run = tmp_path / "r.run"
    run.write_text("1 Q0 d1 1 3.0 x\n1 Q0 d2 2 2.0 x\n")
    (tmp_path / "p.tsv").write_text("d1\tsome text\n")
    (tmp_path / "q.tsv").write_text("1\tquery\n")
    with pytest.raises(InputError, match=r"have no text, e\.g\. d2"):
        run_batch(BatchConfig(inputs=[run], passages=tmp_path / "p.tsv", queries=tmp_path / "q.tsv",
                              output=tmp_path / "o.parquet", ranker="bm25"))
    with pytest.raises(InputError, match="cannot tell the format"):
        run_batch(BatchConfig(inputs=[source], output=tmp_path / "o.csv", ranker="bm25"))


def test_cli_runs_and_resumes(tmp_path, dl19_slice, capsys):
    import argparse

    source = write_jsonl(tmp_path / "in.jsonl", dl19_slice[:3])
    parser = argparse.ArgumentParser()
    batch_cli.register(parser.add_subparsers())
    argv = ["batch", "--input", str(source), "--output", str(tmp_path / "o.run"), "--ranker", "bm25",
            "--shard-size", "100", "--no-progress", "--option", "k1=1.2"]
    assert batch_cli.run(parser.parse_args(argv)) == 0
    assert "3 ranked" in capsys.readouterr().err
    assert batch_cli.run(parser.parse_args(argv)) == 0
    assert "3 kept from before, 0 ranked" in capsys.readouterr().err
    assert len((tmp_path / "o.run").read_text().splitlines()) == 300
    with pytest.raises(InputError, match="key=value"):
        batch_cli.parse_options(["k1"])


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 7), min_size=1, max_size=25), shard_pairs=st.integers(1, 12))
def test_shard_plan_partitions_queries_in_order(sizes, shard_pairs):
    queries = [Query(text="q", candidates=tuple(Candidate(id=str(j), text="t") for j in range(n)), id=str(i))
               for i, n in enumerate(sizes)]
    shards = plan_shards(queries, shard_pairs)
    assert [q.id for shard in shards for q in shard] == [q.id for q in queries]
    for shard in shards:
        pairs = sum(len(q.candidates) for q in shard)
        assert pairs <= shard_pairs or len(shard) == 1
    for i, shard in enumerate(shards):
        round_trip = table_to_queries(queries_to_table(shard, i))
        assert [(q.id, [c.id for c in q.candidates]) for q in round_trip] == \
            [(q.id, [c.id for c in q.candidates]) for q in shard if q.candidates]


def test_a_split_query_is_refused():
    query = Query(text="q", candidates=(Candidate("a", "x"), Candidate("b", "y")), id="1")
    table = queries_to_table([query], 0)
    with pytest.raises(RuntimeError, match="1 of its 2 candidates"):
        table_to_queries(table.slice(0, 1))
