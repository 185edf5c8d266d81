"""The file formats rerankers meet in practice, read and written for the CLI, ``batch``, ``eval`` and ``report``.

- TREC run files (``qid Q0 docid rank score tag``) and TREC qrels (``qid 0 docid grade``);
  three-column SMART/Cranfield qrels (``query doc grade``) are read too (see :func:`read_qrels`).
- JSONL, one query a line: ``{"qid", "query", "candidates": [{"id", "text", ...}]}``.
- RankGPT-style JSON: ``[{"query", "hits": [{"qid", "docid", "rank", "score", "content"}]}]``.
- SMART files of the Cranfield collection (``.I`` / ``.T`` / ``.A`` / ``.B`` / ``.W``).
- A file's format from its name: :func:`format_from_suffix`, the one table every command uses.

Every parse error names the file and the line; nothing is silently skipped.  Reading needs no model.
"""

from surerank.formats.common import AtomicFile, check_text, json_error, json_object, open_text, require_text
from surerank.formats.queries import (
    ranked_list_record,
    read_corpus,
    read_jsonl,
    read_queries,
    read_query_texts,
    read_rankgpt_json,
    write_jsonl,
)
from surerank.formats.smart import read_cranfield, read_smart_documents, read_smart_queries
from surerank.formats.suffix import SUFFIX_FORMATS, format_from_suffix
from surerank.formats.trec import Qrels, Run, lists_to_run, read_qrels, read_run, write_run, write_run_dict

__all__ = [
    "SUFFIX_FORMATS",
    "AtomicFile",
    "Qrels",
    "Run",
    "check_text",
    "format_from_suffix",
    "json_error",
    "json_object",
    "lists_to_run",
    "open_text",
    "ranked_list_record",
    "read_corpus",
    "read_cranfield",
    "read_jsonl",
    "read_qrels",
    "read_queries",
    "read_query_texts",
    "read_rankgpt_json",
    "read_run",
    "read_smart_documents",
    "read_smart_queries",
    "require_text",
    "write_jsonl",
    "write_run",
    "write_run_dict",
]
