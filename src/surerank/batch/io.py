"""Reading batch inputs into queries and writing ranked pair rows out.

Inputs: JSONL (one query per line, ``{"qid", "query", "candidates": [{"id", "text", ...}]}``), Parquet
(one row per pair: ``qid, query, docid, text``; or one row per query with a ``candidates`` list column),
the RankGPT-style JSON of the TREC DL files, or a TREC run plus a passage file and a queries file.
Outputs: Parquet, JSONL (one pair per line) or a TREC run.  Every reader raises :class:`InputError`
naming the file, the line or row (and the query), and the field at fault; nothing is dropped silently.
A query or passage text must be a string ("" is one): null, a missing field, a number or a list is refused
while reading, so :func:`read_queries` fails before a batch job creates its work directory.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from surerank.errors import InputError
from surerank.formats import (
    check_text,
    format_from_suffix,
    json_object,
    open_text,
    read_jsonl,
    read_query_texts,
    read_rankgpt_json,
    read_run,
    require_text,
)
from surerank.storage import durable_replace, fsync_file
from surerank.types import Candidate, Query

logger = logging.getLogger(__name__)

INPUT_FORMATS = ("auto", "jsonl", "parquet", "rankgpt", "trec")
OUTPUT_FORMATS = ("auto", "parquet", "jsonl", "trec")


# ---------------------------------------------------------------- format detection


def detect_input_format(path: Path) -> str:
    """The input format ``path``'s name declares (:func:`surerank.formats.format_from_suffix`)."""
    fmt = format_from_suffix(path)
    if fmt in INPUT_FORMATS:
        return fmt
    raise InputError(
        f"--input {path}: cannot tell the format from the file name; pass --input-format "
        f"({', '.join(INPUT_FORMATS[1:])})"
    )


def detect_output_format(path: Path) -> str:
    """The output format ``path``'s name declares; a compressed name is refused (the writers write plain files)."""
    fmt = format_from_suffix(path)
    if fmt in OUTPUT_FORMATS and not path.name.lower().endswith(".gz"):
        return fmt
    raise InputError(
        f"--output {path}: cannot tell the format from the file name (.parquet, .jsonl, .run/.trec/.txt); "
        "pass --output-format"
    )


# ---------------------------------------------------------------- readers


def _candidate(raw: Any, where: str, position: int) -> Candidate:
    if not isinstance(raw, dict):
        raise InputError(f"{where}: candidates[{position}] must be an object with 'id' and 'text'")
    doc_id = raw.get("id", raw.get("docid"))
    if doc_id is None:
        raise InputError(f"{where}: candidates[{position}] has no 'id' (or 'docid') field")
    text = require_text(raw, f"{where}: candidates[{position}] (id {str(doc_id)!r})", "text", "content")
    extra = {k: v for k, v in raw.items() if k not in ("id", "docid", "text", "content")}
    return Candidate(id=str(doc_id), text=text, metadata=extra)


def read_jsonl_queries(path: Path) -> list[Query]:
    """One query per line: ``{"qid", "query", "candidates": [{"id", "text", ...}]}`` (surerank.formats)."""

    return read_jsonl(path)


def read_rankgpt_queries(path: Path) -> list[Query]:
    """The TREC DL top-100 files, first-stage order kept (surerank.formats)."""

    return read_rankgpt_json(path)


def _pair_rows_to_queries(rows: Iterable[tuple[str, str, str, str]], where: str) -> Iterator[Query]:
    """Group pair rows by qid (first-appearance order); a qid's rows need not be contiguous."""
    groups: dict[str, tuple[str, list[Candidate]]] = {}
    for row_number, (qid, query, docid, text) in enumerate(rows):
        for field, value in (("qid", qid), ("docid", docid)):
            if value is None:
                raise InputError(f"{where}: row {row_number}: field {field!r} is null")
        at = f"{where}: row {row_number} (qid {str(qid)!r}, docid {str(docid)!r})"
        query, text = check_text(query, at, "query"), check_text(text, at, "text")
        qid = str(qid)
        if qid not in groups:
            groups[qid] = (query, [])
        elif groups[qid][0] != query:
            raise InputError(f"{where}: row {row_number}: qid {qid!r} appears with two different query texts")
        groups[qid][1].append(Candidate(id=str(docid), text=text))
    for qid, (query, candidates) in groups.items():
        yield Query(text=query, candidates=tuple(candidates), id=qid)


def read_parquet_queries(path: Path) -> Iterator[Query]:
    """Pair rows (``qid, query, docid, text``) or query rows with a ``candidates`` list of structs."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    columns = set(table.column_names)
    if "candidates" in columns:
        for name in ("qid", "query"):
            if name not in columns:
                raise InputError(f"{path}: column {name!r} is missing; Parquet with a 'candidates' column "
                                 "also needs the columns 'qid' and 'query'")
        for row_number, row in enumerate(table.select(["qid", "query", "candidates"]).to_pylist()):
            if row["qid"] is None:
                raise InputError(f"{path}: row {row_number}: field 'qid' is null")
            where = f"{path}: row {row_number} (qid {str(row['qid'])!r})"
            text = check_text(row["query"], where, "query")
            if not isinstance(row["candidates"], list):
                raise InputError(f"{where}: field 'candidates' must be a list")
            yield Query(
                text=text,
                candidates=tuple(_candidate(c, where, i) for i, c in enumerate(row["candidates"])),
                id=str(row["qid"]),
            )
        return
    needed = ["qid", "query", "docid", "text"]
    absent = [name for name in needed if name not in columns]
    if absent:
        raise InputError(
            f"{path}: Parquet input needs columns qid, query, docid, text (one row per pair) or qid, query, "
            f"candidates; column {', '.join(repr(name) for name in absent)} is missing"
        )
    data = table.select(needed).to_pydict()
    yield from _pair_rows_to_queries(zip(*(data[n] for n in needed), strict=True), str(path))


def read_trec_run(path: Path) -> dict[str, list[tuple[str, float]]]:
    """A TREC run (surerank.formats) as per-qid [(docid, score)], best first (score order, file order on ties)."""

    return {qid: sorted(docs.items(), key=lambda hit: -hit[1]) for qid, docs in read_run(path).items()}


def read_passages(path: Path, wanted: set[str]) -> dict[str, str]:
    """Texts of the ``wanted`` docids only, streaming the file (a whole MS MARCO collection need not fit).

    TSV ``docid<TAB>text`` (MS MARCO ``collection.tsv``) or JSONL with ``id``/``docid``/``_id`` and
    ``text``/``contents`` (a ``title`` field is prepended, BEIR style).
    """
    out: dict[str, str] = {}
    jsonl = format_from_suffix(path) == "jsonl"
    with open_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            if jsonl:
                record = json_object(line, where)
                key = next((k for k in ("id", "docid", "_id") if record.get(k) is not None), None)
                if key is None:
                    raise InputError(f"{where}: a passage line needs an id (id/docid/_id)")
                ident = str(record[key])
                at = f"{where} (passage {ident!r})"
                text = require_text(record, at, "text", "contents")
                title = record.get("title")
                if title is not None and not isinstance(title, str):
                    check_text(title, at, "title")
                if title:
                    text = f"{title} {text}"
            else:
                ident, sep, text = line.rstrip("\n").partition("\t")
                if not sep:
                    raise InputError(f"{where}: passage {ident.strip()!r}: field 'text' is missing; a passage "
                                     "TSV line is 'docid<TAB>text'")
            if ident in wanted:
                out[ident] = text
    return out


def read_trec_queries(run_path: Path, passages: Path | None, queries: Path | None) -> Iterator[Query]:
    """A TREC run with its passage texts and query texts, each candidate list in run order."""

    if passages is None or queries is None:
        raise InputError(f"--input {run_path} is a TREC run: it needs --passages and --queries files")
    run = read_trec_run(run_path)
    wanted = {docid for hits in run.values() for docid, _ in hits}
    texts = read_passages(passages, wanted)
    query_texts = {q.id: q.text for q in read_query_texts(queries)}
    missing_docs = sorted(wanted - texts.keys())
    if missing_docs:
        raise InputError(f"{passages}: {len(missing_docs)} docids of the run {run_path} have no text, "
                         f"e.g. {', '.join(missing_docs[:5])}")
    missing_queries = sorted(set(run) - query_texts.keys())
    if missing_queries:
        raise InputError(f"{queries}: {len(missing_queries)} qids of the run {run_path} have no query text, "
                         f"e.g. {', '.join(missing_queries[:5])}")
    for qid, hits in run.items():
        yield Query(
            text=query_texts[qid],
            candidates=tuple(
                Candidate(id=docid, text=texts[docid], metadata={"first_stage_score": score,
                                                                 "first_stage_rank": rank})
                for rank, (docid, score) in enumerate(hits, start=1)
            ),
            id=qid,
        )


def read_queries(
    paths: Sequence[Path], input_format: str = "auto", passages: Path | None = None,
    queries: Path | None = None,
) -> list[Query]:
    """Every input file's queries in order; a qid seen in two places is an error, not a silent merge."""
    out: list[Query] = []
    seen: dict[str, Path] = {}
    for path in paths:
        if not path.exists():
            raise InputError(f"--input {path}: no such file")
        fmt = detect_input_format(path) if input_format == "auto" else input_format
        if fmt == "jsonl":
            items: Iterable[Query] = read_jsonl_queries(path)
        elif fmt == "parquet":
            items = read_parquet_queries(path)
        elif fmt == "rankgpt":
            items = read_rankgpt_queries(path)
        elif fmt == "trec":
            items = read_trec_queries(path, passages, queries)
        else:
            raise InputError(f"--input-format {fmt!r}: expected one of {', '.join(INPUT_FORMATS)}")
        for query in items:
            if query.id in seen:
                raise InputError(f"qid {query.id!r} appears twice (in {seen[query.id]} and {path}); "
                                 "each query must appear once so each (qid, docid) is ranked once")
            seen[query.id] = path
            out.append(query)
    return out


# ---------------------------------------------------------------- writers


def write_output(table: Any, path: Path, fmt: str, tag: str) -> None:
    """Write the merged result table (pyarrow) to ``path`` atomically (temporary file, then rename)."""
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if fmt == "parquet":
            pq.write_table(table, tmp)
        elif fmt == "jsonl":
            with open(tmp, "w", encoding="utf-8") as handle:
                for batch in table.to_batches(max_chunksize=65536):
                    for row in batch.to_pylist():
                        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        elif fmt == "trec":
            data = table.select(["qid", "docid", "rank", "score"]).to_pydict()
            with open(tmp, "w", encoding="utf-8") as handle:
                columns = (data["qid"], data["docid"], data["rank"], data["score"])
                for qid, docid, rank, score in zip(*columns, strict=True):
                    handle.write(f"{qid} Q0 {docid} {rank} {score!r} {tag}\n")
        else:
            raise InputError(f"--output-format {fmt!r}: expected one of {', '.join(OUTPUT_FORMATS[1:])}")
        fsync_file(tmp)
        durable_replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
