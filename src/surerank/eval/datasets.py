"""The benchmark collections: a data folder (``$SURERANK_DATA`` or ``../shared/data``), else the packaged demo set.

Only TREC DL 2019 travels with the project (``eval/data``: its BM25 top-100 lists and judgments, gzip,
MS MARCO research-only terms; see ``eval/data/README.md``), so ``make demo`` and the ``--help`` examples
work on a clone or a wheel with nothing beside it.  DL20 and Cranfield need a data folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from surerank.errors import InputError
from surerank.formats import Qrels, read_cranfield, read_qrels, read_rankgpt_json
from surerank.types import Candidate, Query

TREC_DL_YEARS = {"19": "dl19", "2019": "dl19", "dl19": "dl19", "20": "dl20", "2020": "dl20", "dl20": "dl20"}
#: the demo set shipped inside the package (gzip files; see data/README.md for provenance and terms)
PACKAGED = Path(__file__).resolve().with_name("data")
#: what ``--input`` / ``--qrels`` accept in place of a file: a TREC DL set's queries or judgments
DATASET_NAMES = ("dl19", "dl20")


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


def _data_folder() -> Path | None:
    try:
        return data_root()
    except InputError:
        return None


def trec_dl_paths(year: int | str) -> tuple[Path, Path]:
    """(top-100 queries, qrels) of TREC DL ``year``: from the data folder, else (DL19) the packaged copy.

    ``$SURERANK_DATA``, when set, is used as given; a data folder found beside the checkout is used when it
    holds both files.
    """
    key = TREC_DL_YEARS.get(str(year).lower())
    if key is None:
        raise InputError(f"unknown TREC DL year {year!r}; known: 19, 20")
    names = (f"{key}-bm25-top100.json", f"qrels.{key}-passage.txt")
    root = _data_folder()
    if root is not None:
        folder = root / "trec-dl"
        if os.environ.get("SURERANK_DATA") or all((folder / name).is_file() for name in names):
            return folder / names[0], folder / names[1]
    packaged = (PACKAGED / f"{names[0]}.gz", PACKAGED / f"{names[1]}.gz")
    if all(path.is_file() for path in packaged):
        return packaged
    raise InputError(f"TREC DL {key}: no data folder holds it and only dl19 ships with surerank; set "
                     "SURERANK_DATA to the folder holding trec-dl/")


def dataset_file(spec: str | os.PathLike[str], part: str) -> Path:
    """A command's file argument: the path as given, or for ``dl19`` / ``dl20`` that set's ``part`` file.

    ``part`` is ``"queries"`` (the BM25 top-100) or ``"qrels"``; an existing file of the same name wins.
    """
    path = Path(spec)
    if path.exists() or str(spec).lower() not in DATASET_NAMES:
        return path
    queries, qrels = trec_dl_paths(str(spec))
    return queries if part == "queries" else qrels


def load_trec_dl(year: int | str) -> tuple[list[Query], Qrels]:
    """TREC DL 2019/2020 passage queries with their BM25 top-100 (in BM25 order) and judgments."""
    queries_path, qrels_path = trec_dl_paths(year)
    return read_rankgpt_json(queries_path), read_qrels(qrels_path)


def load_cranfield() -> tuple[list[Candidate], list[Query], Qrels]:
    return read_cranfield(data_root() / "cranfield")


__all__ = ["DATASET_NAMES", "PACKAGED", "TREC_DL_YEARS", "data_root", "dataset_file", "load_cranfield",
           "load_trec_dl", "trec_dl_paths"]
