"""TREC run files (``qid Q0 docid rank score tag``) and qrels (``qid 0 docid grade``, or SMART's three columns)."""

from __future__ import annotations

import os
from collections.abc import Iterable

from surerank.errors import InputError
from surerank.formats.common import AtomicFile, existing, text_lines
from surerank.types import RankedList

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]


def read_qrels(path: str | os.PathLike[str]) -> Qrels:
    """Read judgments.

    Four columns are TREC qrels (``qid iter docid grade``).  Three columns are the SMART/Cranfield
    layout (``query doc grade`` with 1 = most relevant … 4 = least, -1 = not relevant), converted
    to TREC gains ``5 - grade`` (so 4 = most relevant) and 0 for -1.
    """
    p = existing(path, "qrels")
    qrels: Qrels = {}
    for number, line in text_lines(p):
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
    p = existing(path, "run")
    run: Run = {}
    for number, line in text_lines(p):
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
    with AtomicFile(path) as handle:
        for ranked in lists:
            for item in ranked.items:
                handle.write(f"{ranked.query.id} Q0 {item.id} {item.rank} {float(item.score)!r} {tag}\n")


def write_run_dict(path: str | os.PathLike[str], run: Run, tag: str = "surerank") -> None:
    with AtomicFile(path) as handle:
        for qid, docs in run.items():
            ordered = sorted(docs.items(), key=lambda kv: -kv[1])
            for rank, (docid, score) in enumerate(ordered, start=1):
                handle.write(f"{qid} Q0 {docid} {rank} {float(score)!r} {tag}\n")


__all__ = ["Qrels", "Run", "lists_to_run", "read_qrels", "read_run", "write_run", "write_run_dict"]
