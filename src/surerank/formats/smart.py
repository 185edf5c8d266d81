"""SMART files (``.I`` / ``.T`` / ``.A`` / ``.B`` / ``.W``), the layout of the Cranfield collection."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from surerank.errors import InputError
from surerank.formats.common import existing, text_lines
from surerank.formats.trec import Qrels, read_qrels
from surerank.types import Candidate, Query


def _smart_records(path: Path) -> Iterator[tuple[str, int, dict[str, str]]]:
    """Yield (id, line of its ``.I``, {field letter: text}) from a SMART file (``.I n`` then ``.T`` / ``.W`` …)."""
    current_id: str | None = None
    start = 0
    fields: dict[str, list[str]] = {}
    section: str | None = None
    for number, line in text_lines(path):
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
    p = existing(path, "SMART documents")
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
    p = existing(path, "SMART queries")
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


__all__ = ["read_cranfield", "read_smart_documents", "read_smart_queries"]
