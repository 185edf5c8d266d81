"""The benchmark collections that ship beside the project in ``../shared/data``."""

from __future__ import annotations

import os
from pathlib import Path

from surerank.errors import InputError
from surerank.formats import Qrels, read_cranfield, read_qrels, read_rankgpt_json
from surerank.types import Candidate, Query

TREC_DL_YEARS = {"19": "dl19", "2019": "dl19", "dl19": "dl19", "20": "dl20", "2020": "dl20", "dl20": "dl20"}


def data_root() -> Path:
    """``$SURERANK_DATA``, else the first ``shared/data`` beside the working directory or the checkout."""
    env = os.environ.get("SURERANK_DATA")
    if env:
        return Path(env)
    starts = [Path.cwd(), Path(__file__).resolve()]
    for start in starts:
        for folder in [start, *start.parents]:
            candidate = folder.parent / "shared" / "data"
            if candidate.is_dir():
                return candidate
    raise InputError("benchmark data not found: set SURERANK_DATA to the folder holding trec-dl/ and cranfield/")


def trec_dl_paths(year: int | str) -> tuple[Path, Path]:
    key = TREC_DL_YEARS.get(str(year).lower())
    if key is None:
        raise InputError(f"unknown TREC DL year {year!r}; known: 19, 20")
    root = data_root() / "trec-dl"
    return root / f"{key}-bm25-top100.json", root / f"qrels.{key}-passage.txt"


def load_trec_dl(year: int | str) -> tuple[list[Query], Qrels]:
    """TREC DL 2019/2020 passage queries with their BM25 top-100 (in BM25 order) and judgments."""
    queries_path, qrels_path = trec_dl_paths(year)
    return read_rankgpt_json(queries_path), read_qrels(qrels_path)


def load_cranfield() -> tuple[list[Candidate], list[Query], Qrels]:
    return read_cranfield(data_root() / "cranfield")
