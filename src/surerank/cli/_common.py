"""Small pieces the subcommands share: option parsing, output, progress."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from surerank.errors import InputError
from surerank.formats import (
    Run,
    format_from_suffix,
    lists_to_run,
    read_jsonl,
    read_run,
    write_jsonl,
    write_run,
)
from surerank.ranker import BaseRanker
from surerank.types import Query, RankedList

#: the note the examples carry: what ``dl19`` / ``dl20`` stand for in place of a file
DATASETS = ("dl19 / dl20 in place of a file: the TREC DL 2019 / 2020 passage top-100 and judgments (dl19 ships\n"
            "with surerank; dl20 is read from SURERANK_DATA).")


def echo(text: str = "") -> None:
    """User-facing command output goes to stdout; logs and progress go to stderr."""
    sys.stdout.write(text + "\n")


def parse_options(pairs: Sequence[str] | None) -> dict[str, Any]:
    """``-o key=value`` pairs; values are JSON when they parse as JSON (numbers, lists), else strings."""
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"option {pair!r}: expected key=value, e.g. -o precision=int8")
        try:
            options[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip().replace("-", "_")] = value
    return options


def add_ranker_arguments(parser: Any, default: str = "embedding") -> None:
    parser.add_argument("--ranker", "-r", default=default,
                        help=f"registered ranker name (see 'surerank rankers'); default {default}")
    parser.add_argument("--option", "-o", action="append", metavar="KEY=VALUE",
                        help="ranker option, repeatable, e.g. -o precision=int8 -o model=/path/to/model")


def rank_with_progress(ranker: BaseRanker, queries: Sequence[Query], chunk: int = 8,
                       desc: str = "reranking") -> list[RankedList]:
    """rank_many in chunks of queries, with a progress bar on stderr counting candidate pairs."""
    from tqdm import tqdm

    out: list[RankedList] = []
    total = sum(len(q.candidates) for q in queries)
    with tqdm(total=total, desc=desc, unit="pair", disable=None, file=sys.stderr) as bar:
        for start in range(0, len(queries), chunk):
            part = queries[start:start + chunk]
            out.extend(ranker.rank_many(part))
            bar.update(sum(len(q.candidates) for q in part))
    return out


def write_lists(path: str, lists: Sequence[RankedList], tag: str) -> None:
    """Write by the output's declared format: ``.jsonl`` keeps texts and trust fields, else a TREC run."""
    if format_from_suffix(path) == "jsonl":
        write_jsonl(path, lists)
    else:
        write_run(path, lists, tag=tag)


def read_scored(path: str) -> Run:
    """A run from a TREC run file or from surerank's JSONL output (candidates with scores)."""
    if format_from_suffix(path) == "jsonl":
        queries = read_jsonl(path)
        run: Run = {}
        for q in queries:
            missing = [c.id for c in q.candidates if "score" not in c.metadata]
            if missing:
                raise InputError(f"{path}: query {q.id!r} candidates {missing[:3]} have no 'score'")
            run[q.id] = {c.id: float(c.metadata["score"]) for c in q.candidates}
        return run
    return read_run(path)


def first_stage_run(queries: Sequence[Query]) -> Run:
    """The input order as a run (the first stage's ranking)."""
    return lists_to_run(
        RankedList.from_order(q, list(range(len(q.candidates)))) for q in queries
    )
