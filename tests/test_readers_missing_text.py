"""Issue 12, defect 3: every file reader refuses a null / missing / non-string text, and says where.

One parametrised test over the readers of ``surerank.formats`` and ``surerank.batch.io`` (RankGPT JSON,
JSONL, Parquet pair rows and nested candidates, a TREC run with its passages and queries files in JSONL and
TSV, a JSONL corpus, SMART documents and queries) and each text field they read (passage and query).  For
every fault the reader raises InputError naming the file, the line (files read line by line) or the query
id, and the field; the commands that read the file (``rerank``, ``batch``, ``retrieve``) exit with status 2
before creating their output folder or a batch work directory.  An empty string stays a valid text.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from surerank import formats
from surerank.batch import io as batch_io
from surerank.cli import main
from surerank.errors import InputError

FAULTS = ("null", "missing", "number", "list")
WORD = {"null": "null", "missing": "missing", "number": "number", "list": "list"}


def spoil(record: dict[str, Any], key: str, fault: str) -> None:
    """Put the fault into ``record[key]``."""
    if fault == "missing":
        del record[key]
    else:
        record[key] = {"null": None, "number": 7, "list": ["a", "b"]}[fault]


@dataclass
class Case:
    read: Callable[[], Any]
    file: str  # the file name the message must contain
    where: str | None  # "name:line" or "query 'qid'" (None: a whole Parquet column is absent)
    field: str
    commands: list[list[str]] = field(default_factory=list)


def _out(tmp: Path, name: str) -> str:
    return str(tmp / "out" / name)


def _batch(tmp: Path, inputs: list[str], *extra: str, output: str = "result.jsonl") -> list[str]:
    argv = ["batch", "--ranker", "first-stage", "--no-progress", "--output", _out(tmp, output)]
    for path in inputs:
        argv += ["--input", path]
    return argv + list(extra)


def _rerank(tmp: Path, path: str) -> list[str]:
    return ["rerank", "--input", path, "--ranker", "first-stage", "--output", _out(tmp, "result.run")]


# --------------------------------------------------------------------------- RankGPT JSON
def _rankgpt(tmp: Path, fault: str, key: str) -> Case:
    data = [{"query": f"query {q}", "hits": [{"qid": f"q{q}", "docid": f"d{q}{i}", "content": f"text {i}",
                                              "score": 10.0 - i, "rank": i + 1} for i in range(3)]}
            for q in (1, 2)]
    spoil(data[1]["hits"][1] if key == "content" else data[1], key, fault)
    path = tmp / "in.json"
    path.write_text(json.dumps(data))
    commands = [_rerank(tmp, str(path)), _batch(tmp, [str(path)])]
    if key == "content" and fault == "null":  # the case: a wall of Ray errors; now refused up front
        commands.append(_batch(tmp, [str(path)], "--engine", "ray", "--ray-cpus", "1"))
    return Case(lambda: formats.read_rankgpt_json(path), "in.json", "query 'q2'", key, commands)


# --------------------------------------------------------------------------- JSONL
def _jsonl(tmp: Path, fault: str, key: str) -> Case:
    records = [{"qid": f"q{q}", "query": f"query {q}",
                "candidates": [{"id": f"d{q}{i}", "text": f"text {i}"} for i in range(3)]} for q in (1, 2)]
    spoil(records[1]["candidates"][2] if key == "text" else records[1], key, fault)
    path = tmp / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return Case(lambda: formats.read_jsonl(path), "in.jsonl", "in.jsonl:2", key,
                [_rerank(tmp, str(path)), _batch(tmp, [str(path)])])


# --------------------------------------------------------------------------- Parquet
def _write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)


def _parquet_pairs(tmp: Path, fault: str, key: str) -> Case:
    rows = [{"qid": f"q{q}", "query": f"query {q}", "docid": f"d{q}{i}", "text": f"text {i}"}
            for q in (1, 2) for i in range(3)]
    # a column has one type: null spoils one row (q2's), the other faults the whole column (q1 first)
    for row in rows[4:5] if fault == "null" else rows:
        spoil(row, key, fault)
    path = tmp / "in.parquet"
    _write_parquet(path, rows)
    where = None if fault == "missing" else "qid 'q2'" if fault == "null" else "qid 'q1'"
    return Case(lambda: list(batch_io.read_parquet_queries(path)), "in.parquet", where, key,
                [_batch(tmp, [str(path)])])


def _parquet_nested(tmp: Path, fault: str, key: str) -> Case:
    rows = [{"qid": f"q{q}", "query": f"query {q}",
             "candidates": [{"id": f"d{q}{i}", "text": f"text {i}"} for i in range(3)]} for q in (1, 2)]
    if key == "query":
        targets = [rows[1]] if fault == "null" else rows
    else:
        targets = [rows[1]["candidates"][1]] if fault == "null" else [c for r in rows for c in r["candidates"]]
    for target in targets:
        spoil(target, key, fault)
    path = tmp / "nested.parquet"
    _write_parquet(path, rows)
    where = "qid 'q2'" if fault == "null" else None if (fault, key) == ("missing", "query") else "qid 'q1'"
    return Case(lambda: list(batch_io.read_parquet_queries(path)), "nested.parquet", where, key,
                [_batch(tmp, [str(path)])])


# --------------------------------------------------------------------------- TREC run + passages + queries
def _trec(tmp: Path, fault: str, spoilt: str) -> Case:
    """``spoilt``: which file carries the fault (passages-jsonl, passages-tsv, queries-jsonl, queries-tsv)."""
    run = tmp / "in.run"
    run.write_text("".join(f"q{q} Q0 d{q}{i} {i + 1} {10 - i} bm25\n" for q in (1, 2) for i in range(3)))
    passages = [{"id": f"d{q}{i}", "text": f"text {i}"} for q in (1, 2) for i in range(3)]
    queries = [{"qid": f"q{q}", "query": f"query {q}"} for q in (1, 2)]
    kind, layout = spoilt.split("-")
    if kind == "passages":
        spoil(passages[1], "text", fault)
    else:
        spoil(queries[1], "query", fault)

    def write(name: str, records: list[dict[str, Any]], key: str, text: str) -> Path:
        path = tmp / f"{name}.{layout if kind == name else 'jsonl'}"
        if path.suffix == ".tsv":  # only "missing" can be written: a line without the tab
            path.write_text("".join(f"{r[key]}\t{r[text]}\n" if text in r else f"{r[key]}\n" for r in records))
        else:
            path.write_text("".join(json.dumps(r) + "\n" for r in records))
        return path

    passage_file = write("passages", passages, "id", "text")
    query_file = write("queries", queries, "qid", "query")
    name = (passage_file if kind == "passages" else query_file).name
    return Case(lambda: list(batch_io.read_trec_queries(run, passage_file, query_file)), name, f"{name}:2",
                "text" if kind == "passages" else "query",
                [_batch(tmp, [str(run)], "--passages", str(passage_file), "--queries", str(query_file))])


# --------------------------------------------------------------------------- corpus and SMART (retrieve)
def _corpus(tmp: Path, fault: str) -> Case:
    docs = [{"id": f"d{i}", "text": f"text {i}"} for i in range(3)]
    spoil(docs[1], "text", fault)
    path = tmp / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    queries = tmp / "queries.tsv"
    queries.write_text("q1\ttext\n")
    return Case(lambda: formats.read_corpus(path), "corpus.jsonl", "corpus.jsonl:2", "text",
                [["retrieve", "--corpus", str(path), "--queries", str(queries), "--output", _out(tmp, "r.jsonl")]])


def _smart(tmp: Path, fault: str, what: str) -> Case:
    docs = tmp / "docs.all"
    docs.write_text(".I 1\n.T\ntitle one\n.W\nbody one\n.I 2\n.T\ntitle two\n.W\nbody two\n")
    queries = tmp / "topics.qry"
    queries.write_text(".I 001\n.W\nfirst query\n.I 002\n.W\nsecond query\n")
    if what == "documents":  # record 2 (line 6) without its .T and .W sections
        docs.write_text(".I 1\n.T\ntitle one\n.W\nbody one\n.I 2\n.A\nsomeone\n")
        read, name, where, key = (lambda: formats.read_smart_documents(docs)), "docs.all", "docs.all:6", ".W"
    else:  # query 2 (line 4) without its .W section
        queries.write_text(".I 001\n.W\nfirst query\n.I 002\n")
        read, name, where, key = (lambda: formats.read_smart_queries(queries)), "topics.qry", "topics.qry:4", ".W"
    return Case(read, name, where, key,
                [["retrieve", "--corpus", str(docs), "--queries", str(queries), "--output", _out(tmp, "r.run")]])


READERS: dict[str, tuple[Callable[[Path, str], Case], tuple[str, ...]]] = {
    "rankgpt-content": (lambda t, f: _rankgpt(t, f, "content"), FAULTS),
    "rankgpt-query": (lambda t, f: _rankgpt(t, f, "query"), FAULTS),
    "jsonl-text": (lambda t, f: _jsonl(t, f, "text"), FAULTS),
    "jsonl-query": (lambda t, f: _jsonl(t, f, "query"), FAULTS),
    "parquet-pairs-text": (lambda t, f: _parquet_pairs(t, f, "text"), FAULTS),
    "parquet-pairs-query": (lambda t, f: _parquet_pairs(t, f, "query"), FAULTS),
    "parquet-nested-text": (lambda t, f: _parquet_nested(t, f, "text"), FAULTS),
    "parquet-nested-query": (lambda t, f: _parquet_nested(t, f, "query"), FAULTS),
    "trec-passages-jsonl": (lambda t, f: _trec(t, f, "passages-jsonl"), FAULTS),
    "trec-passages-tsv": (lambda t, f: _trec(t, f, "passages-tsv"), ("missing",)),
    "trec-queries-jsonl": (lambda t, f: _trec(t, f, "queries-jsonl"), FAULTS),
    "trec-queries-tsv": (lambda t, f: _trec(t, f, "queries-tsv"), ("missing",)),
    "corpus-jsonl": (_corpus, FAULTS),
    "smart-documents": (lambda t, f: _smart(t, f, "documents"), ("missing",)),
    "smart-queries": (lambda t, f: _smart(t, f, "queries"), ("missing",)),
}
PARAMS = [pytest.param(reader, fault, id=f"{reader}-{fault}")
          for reader, (_, faults) in READERS.items() for fault in faults]


@pytest.mark.parametrize(("reader", "fault"), PARAMS)
def test_reader_refuses_missing_text_before_any_work(tmp_path, capsys, reader, fault):
    case = READERS[reader][0](tmp_path, fault)
    with pytest.raises(InputError) as raised:
        case.read()
    message = str(raised.value)
    assert case.file in message, message
    if case.where is not None:
        assert case.where in message, message
    assert f"'{case.field}'" in message, message
    assert WORD[fault] in message, message

    assert case.commands, "every reader is reached from a command"
    for argv in case.commands:
        capsys.readouterr()
        status = main(argv)
        stderr = capsys.readouterr().err
        assert status == 2, (argv, stderr)
        assert case.file in stderr and f"'{case.field}'" in stderr, stderr
        # nothing created: no output file, no <output>.shards work directory, not even their folder
        assert not (tmp_path / "out").exists(), (argv, sorted(p.name for p in (tmp_path / "out").rglob("*")))


def test_empty_text_is_still_a_text(tmp_path):
    """"" is legitimate (an empty passage, Cranfield has two): the readers keep accepting it."""
    data = [{"query": "", "hits": [{"qid": "q1", "docid": "d1", "content": ""}]}]
    (tmp_path / "in.json").write_text(json.dumps(data))
    (tmp_path / "in.jsonl").write_text(json.dumps({"qid": "q1", "query": "", "candidates": [
        {"id": "d1", "text": ""}, ""]}) + "\n")
    _write_parquet(tmp_path / "in.parquet", [{"qid": "q1", "query": "", "docid": "d1", "text": ""}])
    for queries in (formats.read_rankgpt_json(tmp_path / "in.json"), formats.read_jsonl(tmp_path / "in.jsonl"),
                    list(batch_io.read_parquet_queries(tmp_path / "in.parquet"))):
        assert queries[0].text == "" and {c.text for c in queries[0].candidates} == {""}
