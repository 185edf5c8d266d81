"""Query files: JSONL (one query a line), RankGPT-style JSON, corpora and query-text files; JSONL output.

- JSONL: ``{"qid", "query", "candidates": [{"id", "text", ...}]}``.
- RankGPT-style JSON: ``[{"query", "hits": [{"qid", "docid", "rank", "score", "content"}]}]``.

A ``.gz`` file of either is read as well.  A text field (a query, a passage) must be a string: null, a missing
field, a number or a list is an :class:`InputError` naming the file, the line (or query) and the field, raised
while reading, before any model is loaded.  An empty string is a text and is accepted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from surerank.errors import InputError
from surerank.formats.common import (
    AtomicFile,
    describe_value,
    existing,
    json_error,
    json_object,
    open_text,
    require_text,
    text_lines,
)
from surerank.formats.smart import read_smart_documents, read_smart_queries
from surerank.formats.suffix import format_from_suffix
from surerank.types import Candidate, Query, RankedList


def read_rankgpt_json(path: str | os.PathLike[str]) -> list[Query]:
    """Read RankGPT-style JSON, such as the TREC DL top-100 files (first-stage order kept).

    Each hit needs ``docid`` and a string ``content``; ``score`` and ``rank`` are kept as metadata
    (``bm25_score``, ``first_stage_rank``) when present, and are then numbers.
    """
    p = existing(path, "RankGPT JSON")
    try:
        with open_text(p) as handle:
            data = json.loads(handle.read())
    except json.JSONDecodeError as error:
        raise InputError(f"{p}:{error.lineno}: invalid JSON: {json_error(error, line=False)}") from None
    if not isinstance(data, list):
        raise InputError(f"{p}: expected a JSON list of {{'query', 'hits'}} objects")
    queries = []
    for position, entry in enumerate(data):
        if not isinstance(entry, dict) or "hits" not in entry:
            raise InputError(f"{p}: entry {position} needs 'query' and 'hits'")
        hits = entry["hits"]
        if not isinstance(hits, list) or not all(isinstance(hit, dict) for hit in hits):
            raise InputError(f"{p}: entry {position}: field 'hits' must be a list of objects")
        qid = str(hits[0]["qid"]) if hits and "qid" in hits[0] else str(entry.get("qid", position))
        where = f"{p}: query {qid!r} (entry {position})"
        text = require_text(entry, where, "query")
        candidates = []
        for number, hit in enumerate(hits):
            if hit.get("docid") is None:
                raise InputError(f"{where}: hits[{number}]: field 'docid' is missing or null")
            at = f"{where}: hits[{number}] (docid {str(hit['docid'])!r})"
            metadata: dict[str, Any] = {}
            for field, key in (("score", "bm25_score"), ("rank", "first_stage_rank")):
                if field in hit:
                    value = hit[field]
                    if isinstance(value, bool) or not isinstance(value, (int, float)):
                        raise InputError(f"{at}: field {field!r} is {describe_value(value)}; expected a number")
                    metadata[key] = float(value) if field == "score" else value
            candidates.append(Candidate(id=str(hit["docid"]), text=require_text(hit, at, "content"),
                                        metadata=metadata))
        try:
            queries.append(Query(text=text, candidates=tuple(candidates), id=qid))
        except InputError as error:
            raise InputError(f"{p}: entry {position}: {error}") from None
    return queries


def read_jsonl(path: str | os.PathLike[str]) -> list[Query]:
    """Read ``{"qid", "query", "candidates": [{"id", "text", ...}]}`` lines (a candidate may be a bare string).

    Other fields of a line become the query's metadata (a generation task's ``entry_point``, ``tests``,
    ``database`` or MBR ``references``), as other candidate fields become the candidate's."""
    p = existing(path, "JSONL")
    queries = []
    for number, line in text_lines(p):
        where = f"{p}:{number}"
        record = json_object(line, where)
        text = require_text(record, where, "query")
        raw = record.get("candidates", [])
        if not isinstance(raw, list):
            raise InputError(f"{where}: field 'candidates' must be a list")
        candidates = []
        for position, c in enumerate(raw):
            at = f"{where}: candidates[{position}]"
            if isinstance(c, str):  # a bare string is a candidate's text
                candidates.append(Candidate(id=str(position), text=c))
                continue
            if not isinstance(c, dict):
                raise InputError(f"{at} is {describe_value(c)}; expected an object with a string field 'text' "
                                 "(or a string)")
            cid = c.get("id", c.get("docid", position))
            if cid is None:
                raise InputError(f"{at}: field 'id' is null")
            body = require_text(c, f"{at} (id {str(cid)!r})", "text")
            extra = {k: v for k, v in c.items() if k not in ("id", "text", "docid")}
            candidates.append(Candidate(id=str(cid), text=body, metadata=extra))
        try:
            metadata = {k: v for k, v in record.items() if k not in ("qid", "query", "candidates")}
            queries.append(Query(text=text, candidates=tuple(candidates), id=str(record.get("qid", number)),
                                 metadata=metadata))
        except InputError as error:
            raise InputError(f"{where}: {error}") from None
    return queries


def ranked_list_record(ranked: RankedList, include_text: bool = True) -> dict[str, Any]:
    record: dict[str, Any] = {"qid": ranked.query.id, "query": ranked.query.text, "ranker": ranked.ranker}
    if ranked.abstain is not None:
        record["abstain"] = ranked.abstain
    if ranked.confidence is not None:
        record["confidence"] = ranked.confidence
    record["cost"] = asdict(ranked.cost)
    if ranked.info:
        record["info"] = ranked.info
    candidates = []
    for item in ranked.items:
        c: dict[str, Any] = {"id": item.id, "rank": item.rank, "score": item.score}
        if include_text:
            c["text"] = item.text
        if item.probability is not None:
            c["probability"] = item.probability
        if item.keep is not None:
            c["keep"] = item.keep
        if item.truncation is not None:
            t = item.truncation
            c["truncation"] = {**asdict(t), "tokens_dropped": t.tokens_dropped}
        c.update({k: v for k, v in item.metadata.items() if k not in c})
        candidates.append(c)
    record["candidates"] = candidates
    return record


def write_jsonl(path: str | os.PathLike[str], lists: Iterable[RankedList], include_text: bool = True) -> None:
    """Write ranked lists in the input JSONL shape, best first, with rank, score and trust fields."""
    with AtomicFile(path) as handle:
        for ranked in lists:
            handle.write(json.dumps(ranked_list_record(ranked, include_text)) + "\n")


def read_queries(path: str | os.PathLike[str]) -> list[Query]:
    """Read a query file by its declared format: ``.json`` is RankGPT-style, ``.jsonl`` is JSONL."""
    p = existing(path, "input")
    fmt = format_from_suffix(p)
    if fmt == "rankgpt":
        return read_rankgpt_json(p)
    if fmt == "jsonl":
        return read_jsonl(p)
    raise InputError(f"{p}: unknown input format {p.suffix.lower()!r}; use .jsonl (one query a line) or .json "
                     "(RankGPT style)")


def read_corpus(path: str | os.PathLike[str]) -> list[Candidate]:
    """A corpus: JSONL of ``{"id", "text"}`` (or ``docid``/``contents``), else a SMART file."""
    p = existing(path, "corpus")
    if format_from_suffix(p) != "jsonl":
        return read_smart_documents(p)
    docs = []
    for number, line in text_lines(p):
        where = f"{p}:{number}"
        record = json_object(line, where, "a JSON object {'id', 'text'}")
        doc_id = record.get("id", record.get("docid"))
        if doc_id is None:
            raise InputError(f"{where}: a corpus line needs a field 'id' (or 'docid'), not null")
        text = require_text(record, f"{where} (id {str(doc_id)!r})", "text", "contents")
        extra = {k: v for k, v in record.items() if k not in ("id", "docid", "text", "contents")}
        docs.append(Candidate(id=str(doc_id), text=text, metadata=extra))
    return docs


def read_query_texts(path: str | os.PathLike[str]) -> list[Query]:
    """Queries without candidates: JSONL ``{"qid", "query"}``, TSV ``qid<TAB>query``, or SMART."""
    p = existing(path, "queries")
    fmt = format_from_suffix(p)
    if fmt == "jsonl":
        return read_jsonl(p)
    if fmt == "tsv":
        out = []
        for number, line in text_lines(p):
            qid, sep, text = line.rstrip("\n").partition("\t")
            if not sep:
                raise InputError(f"{p}:{number}: query {qid.strip()!r}: field 'query' is missing; "
                                 "expected 'qid<TAB>query'")
            out.append(Query(text=text, id=qid))
        return out
    return read_smart_queries(p)


__all__ = ["ranked_list_record", "read_corpus", "read_jsonl", "read_queries", "read_query_texts",
           "read_rankgpt_json", "write_jsonl"]
