"""A file's format from its name: the one table that ``rerank``, ``eval``, ``batch`` and the readers share.

Each caller decides what it does with a name the table does not know (a TREC run, SMART, or an error
asking for an explicit format), but no two callers disagree on what a suffix means.
"""

from __future__ import annotations

import os
from pathlib import Path

#: suffix -> format; ``jsonl``: one query (or pair) a line; ``rankgpt``: the TREC DL top-100 JSON
SUFFIX_FORMATS: dict[str, str] = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "rankgpt", ".parquet": "parquet", ".pq": "parquet",
    ".run": "trec", ".trec": "trec", ".txt": "trec", ".tsv": "tsv",
}
#: formats whose files may also come gzip-compressed (``x.jsonl.gz``): the text ones
COMPRESSIBLE = frozenset({"jsonl", "rankgpt", "trec", "tsv"})


def format_from_suffix(path: str | os.PathLike[str]) -> str | None:
    """The format ``path``'s name declares (see :data:`SUFFIX_FORMATS`), or None when it declares none."""
    name = Path(path).name.lower()
    compressed = name.endswith(".gz")
    fmt = SUFFIX_FORMATS.get(Path(name.removesuffix(".gz")).suffix)
    if compressed and fmt not in COMPRESSIBLE:
        return None
    return fmt


__all__ = ["COMPRESSIBLE", "SUFFIX_FORMATS", "format_from_suffix"]
