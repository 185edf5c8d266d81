"""Readers and writers for the formats rerankers meet in practice.

- TREC run files (``qid Q0 docid rank score tag``) and TREC qrels (``qid 0 docid grade``);
  three-column SMART/Cranfield qrels (``query doc grade``) are read too (see :func:`read_qrels`).
- JSONL, one query a line: ``{"qid", "query", "candidates": [{"id", "text", ...}]}``.
- RankGPT-style JSON: ``[{"query", "hits": [{"qid", "docid", "rank", "score", "content"}]}]``.
- SMART files of the Cranfield collection (``.I`` / ``.T`` / ``.A`` / ``.B`` / ``.W``).

Every parse error names the file and the line; nothing is silently skipped.  A text field (a query, a
passage) must be a string: null, a missing field, a number or a list is an :class:`InputError` naming the
file, the line (or query) and the field, raised while reading, before any model is loaded.  An empty
string is a text and is accepted.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from surerank.errors import InputError
from surerank.types import Candidate, Query, RankedList

logger = logging.getLogger(__name__)

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]


def _existing(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} file not found: {p}")
    if p.is_dir():
        raise InputError(f"{what} path is a directory, expected a file: {p}")
    return p


def _describe(value: Any) -> str:
    """A value's JSON kind for an error message: null, a number (3), a list, an object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"


def check_text(value: Any, where: str, field: str) -> str:
    """``value`` if it is a string; else an InputError naming ``where`` and the field.

    Ranking a null or a number as "" (or crashing inside a model, or on a Ray worker) would hide a fault
    of the input, so readers call this before building a :class:`Candidate` or :class:`Query`.
    """
    if isinstance(value, str):
        return value
    raise InputError(f"{where}: field {field!r} is {_describe(value)}; expected a string (\"\" for an empty text)")


def require_text(record: Mapping[str, Any], where: str, field: str, *aliases: str) -> str:
    """The string under ``field`` (or the first of ``aliases`` present); missing or not a string is an error."""
    for name in (field, *aliases):
        if name in record:
            return check_text(record[name], where, name)
    names = " or ".join(repr(name) for name in (field, *aliases))
    raise InputError(f"{where}: field {names} is missing; expected a string (\"\" for an empty text)")


def json_error(error: json.JSONDecodeError, line: bool = True) -> str:
    """``Expecting value at line 3, column 5`` (json's own messages may end in "starting at")."""
    message = error.msg.removesuffix(" at")
    where = f"line {error.lineno}, column {error.colno}" if line else f"column {error.colno}"
    return f"{message} at {where}"


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line


# --------------------------------------------------------------------------- qrels and runs
def read_qrels(path: str | os.PathLike[str]) -> Qrels:
    """Read judgments.

    Four columns are TREC qrels (``qid iter docid grade``).  Three columns are the SMART/Cranfield
    layout (``query doc grade`` with 1 = most relevant … 4 = least, -1 = not relevant), converted
    to TREC gains ``5 - grade`` (so 4 = most relevant) and 0 for -1.
    """
    p = _existing(path, "qrels")
    qrels: Qrels = {}
    for number, line in _lines(p):
        fields = line.split()
        try:
            if len(fields) == 4:
                qid, _, docid, grade = fields[0], fields[1], fields[2], int(fields[3])
            elif len(fields) == 3:
                qid, docid, raw = fields[0], fields[1], int(fields[2])
                grade = 5 - raw if 1 <= raw <= 4 else 0
            else:
                raise ValueError(f"expected 4 fields 'qid iter docid grade' (or 3), got {len(fields)}")
        except ValueError as error:
            detail = str(error) if "expected" in str(error) else "the grade must be an integer"
            raise InputError(f"{p}:{number}: malformed qrels line {line.strip()!r}: {detail} "
                             "(TREC: 'qid iter docid grade'; Cranfield: 'query doc grade')") from None
        qrels.setdefault(qid, {})[docid] = grade
    if not qrels:
        raise InputError(f"{p}: no judgments found")
    return qrels


def read_run(path: str | os.PathLike[str]) -> Run:
    """Read a TREC run file (``qid Q0 docid rank score tag``)."""
    p = _existing(path, "run")
    run: Run = {}
    for number, line in _lines(p):
        fields = line.split()
        if len(fields) != 6:
            raise InputError(f"{p}:{number}: expected 6 fields 'qid Q0 docid rank score tag', got {len(fields)}")
        try:
            score = float(fields[4])
        except ValueError:
            raise InputError(f"{p}:{number}: score {fields[4]!r} is not a number") from None
        docs = run.setdefault(fields[0], {})
        if fields[2] in docs:
            raise InputError(f"{p}:{number}: document {fields[2]!r} appears twice for query {fields[0]!r}")
        docs[fields[2]] = score
    return run


def lists_to_run(lists: Iterable[RankedList]) -> Run:
    return {ranked.query.id: {item.id: item.score for item in ranked.items} for ranked in lists}


def write_run(path: str | os.PathLike[str], lists: Iterable[RankedList], tag: str = "surerank") -> None:
    """Write a TREC run.  Scores are written exactly (shortest round-trip form), so scores that differ in the
    ranker stay different in the file and sorting by score reproduces the ranks; scores that truly tie stay
    tied, and then the rank column holds surerank's order (trec_eval would order them by docid)."""
    with _AtomicFile(path) as handle:
        for ranked in lists:
            for item in ranked.items:
                handle.write(f"{ranked.query.id} Q0 {item.id} {item.rank} {float(item.score)!r} {tag}\n")


def write_run_dict(path: str | os.PathLike[str], run: Run, tag: str = "surerank") -> None:
    with _AtomicFile(path) as handle:
        for qid, docs in run.items():
            ordered = sorted(docs.items(), key=lambda kv: -kv[1])
            for rank, (docid, score) in enumerate(ordered, start=1):
                handle.write(f"{qid} Q0 {docid} {rank} {float(score)!r} {tag}\n")


class _AtomicFile:
    """Write to a temporary file and rename, so a crash never leaves half a result file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")

    def __enter__(self) -> Any:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = self.tmp.open("w", encoding="utf-8")
        return self.handle

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        self.handle.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- query files
def read_rankgpt_json(path: str | os.PathLike[str]) -> list[Query]:
    """Read the RankGPT-style JSON of ``../shared/data/trec-dl`` (first-stage order kept).

    Each hit needs ``docid`` and a string ``content``; ``score`` and ``rank`` are kept as metadata
    (``bm25_score``, ``first_stage_rank``) when present, and are then numbers.
    """
    p = _existing(path, "RankGPT JSON")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
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
                        raise InputError(f"{at}: field {field!r} is {_describe(value)}; expected a number")
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
    p = _existing(path, "JSONL")
    queries = []
    for number, line in _lines(p):
        where = f"{p}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{where}: invalid JSON: {json_error(error, line=False)}") from None
        if not isinstance(record, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(record).__name__}")
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
                raise InputError(f"{at} is {_describe(c)}; expected an object with a string field 'text' "
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
    with _AtomicFile(path) as handle:
        for ranked in lists:
            handle.write(json.dumps(ranked_list_record(ranked, include_text)) + "\n")


def read_queries(path: str | os.PathLike[str]) -> list[Query]:
    """Read a query file by its declared format: ``.json`` is RankGPT-style, ``.jsonl`` is JSONL."""
    p = _existing(path, "input")
    suffix = p.suffix.lower()
    if suffix == ".json":
        return read_rankgpt_json(p)
    if suffix in (".jsonl", ".ndjson"):
        return read_jsonl(p)
    raise InputError(f"{p}: unknown input format {suffix!r}; use .jsonl (one query a line) or .json (RankGPT style)")


# --------------------------------------------------------------------------- SMART / Cranfield
def _smart_records(path: Path) -> Iterator[tuple[str, int, dict[str, str]]]:
    """Yield (id, line of its ``.I``, {field letter: text}) from a SMART file (``.I n`` then ``.T`` / ``.W`` …)."""
    current_id: str | None = None
    start = 0
    fields: dict[str, list[str]] = {}
    section: str | None = None
    for number, line in _lines(path):
        if line.startswith(".I"):
            if current_id is not None:
                yield current_id, start, {k: " ".join(v).strip() for k, v in fields.items()}
            current_id, start, fields, section = line[2:].strip(), number, {}, None
        elif len(line) >= 2 and line[0] == "." and line[1].isalpha() and line[2:].strip() == "":
            section = line[1]
            fields.setdefault(section, [])
        elif section is not None:
            fields[section].append(line.strip())
    if current_id is not None:
        yield current_id, start, {k: " ".join(v).strip() for k, v in fields.items()}


def read_smart_documents(path: str | os.PathLike[str]) -> list[Candidate]:
    """Documents of a SMART collection; the text is title and abstract (``.T`` + ``.W``).

    A record with neither a ``.T`` nor a ``.W`` section has no text and is an error; an empty section
    is an empty text (Cranfield has two such documents) and is kept.
    """
    p = _existing(path, "SMART documents")
    docs = []
    for doc_id, number, f in _smart_records(p):
        if "T" not in f and "W" not in f:
            raise InputError(f"{p}:{number}: document {doc_id!r}: field '.W' (or '.T') is missing; "
                             "the text of a SMART document is its .T and .W sections")
        docs.append(Candidate(id=doc_id, text=" ".join(x for x in (f.get("T", ""), f.get("W", "")) if x),
                              metadata={"title": f.get("T", ""), "author": f.get("A", ""),
                                        "source": f.get("B", "")}))
    if not docs:
        raise InputError(f"{p}: no '.I' records found; is this a SMART file?")
    return docs


def read_smart_queries(path: str | os.PathLike[str]) -> list[Query]:
    """Queries of a SMART collection, numbered by their 1-based position.

    The Cranfield judgments refer to queries by position, not by their ``.I`` number (which skips
    values), so position is the id; the ``.I`` number is kept in the metadata.  A record without a
    ``.W`` section has no query text and is an error.
    """
    p = _existing(path, "SMART queries")
    queries = []
    for position, (smart_id, number, f) in enumerate(_smart_records(p), start=1):
        if "W" not in f:
            raise InputError(f"{p}:{number}: query {str(position)!r} (.I {smart_id}): field '.W' is missing; "
                             "the text of a SMART query is its .W section")
        queries.append(Query(text=f["W"], id=str(position), metadata={"smart_id": smart_id}))
    return queries


def read_cranfield(directory: str | os.PathLike[str]) -> tuple[list[Candidate], list[Query], Qrels]:
    """The whole Cranfield collection: corpus, queries (without candidates) and judgments."""
    d = Path(directory)
    return (read_smart_documents(d / "cran.all.1400"), read_smart_queries(d / "cran.qry"),
            read_qrels(d / "cranqrel"))


def read_corpus(path: str | os.PathLike[str]) -> list[Candidate]:
    """A corpus: JSONL of ``{"id", "text"}`` (or ``docid``/``contents``), else a SMART file."""
    p = _existing(path, "corpus")
    if p.suffix.lower() not in (".jsonl", ".ndjson"):
        return read_smart_documents(p)
    docs = []
    for number, line in _lines(p):
        where = f"{p}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{where}: invalid JSON: {json_error(error, line=False)}") from None
        if not isinstance(record, dict):
            raise InputError(f"{where}: expected a JSON object {{'id', 'text'}}, got {type(record).__name__}")
        doc_id = record.get("id", record.get("docid"))
        if doc_id is None:
            raise InputError(f"{where}: a corpus line needs a field 'id' (or 'docid'), not null")
        text = require_text(record, f"{where} (id {str(doc_id)!r})", "text", "contents")
        extra = {k: v for k, v in record.items() if k not in ("id", "docid", "text", "contents")}
        docs.append(Candidate(id=str(doc_id), text=text, metadata=extra))
    return docs


def read_query_texts(path: str | os.PathLike[str]) -> list[Query]:
    """Queries without candidates: JSONL ``{"qid", "query"}``, TSV ``qid<TAB>query``, or SMART."""
    p = _existing(path, "queries")
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return read_jsonl(p)
    if suffix == ".tsv":
        out = []
        for number, line in _lines(p):
            qid, sep, text = line.rstrip("\n").partition("\t")
            if not sep:
                raise InputError(f"{p}:{number}: query {qid.strip()!r}: field 'query' is missing; "
                                 "expected 'qid<TAB>query'")
            out.append(Query(text=text, id=qid))
        return out
    return read_smart_queries(p)
