"""Files the rankers write (BM25 index and statistics, QE weights) appear whole or not at all: a failed write
leaves the old file as it was and no temporary file behind (they go through surerank.storage)."""

from __future__ import annotations

import json

import pytest

from surerank import Reranker, storage
from surerank.rankers.bm25 import BM25Index, CorpusStats
from surerank.types import Candidate

CORPUS = [Candidate(id=f"d{i}", text=text) for i, text in enumerate(
    ["wing lift at low speed", "boundary layer transition", "supersonic flow over a cone", "heat transfer in jets"])]


def _files(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _crash_before_rename(monkeypatch) -> None:
    """The new bytes are written, then the process dies before the rename: an in-place writer has clobbered."""
    def crash(tmp, path):
        raise OSError("crash before the rename")
    monkeypatch.setattr(storage, "durable_replace", crash)


def test_a_failed_index_save_leaves_the_old_index(tmp_path, monkeypatch):
    BM25Index(CORPUS).save(tmp_path / "index")
    before = _files(tmp_path / "index")
    assert {"corpus.jsonl", "config.json"} <= set(before) and any(k.startswith("bm25s/") for k in before)
    real = json.dumps

    def disk_full_at_the_third_document(value, *args, **kwargs):
        if isinstance(value, dict) and value.get("id") == "d2":
            raise OSError("disk full")
        return real(value, *args, **kwargs)

    monkeypatch.setattr(json, "dumps", disk_full_at_the_third_document)
    with pytest.raises(OSError, match="disk full"):
        BM25Index(CORPUS[:1] + CORPUS[2:]).save(tmp_path / "index")
    assert _files(tmp_path / "index")["corpus.jsonl"] == before["corpus.jsonl"]  # not half a new corpus
    assert [p.name for p in (tmp_path / "index").rglob(".*")] == []  # no temporary file or staging folder


def test_a_failed_statistics_save_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "stats.json"
    BM25Index(CORPUS).corpus_stats().save(path)
    before = path.read_bytes()
    assert CorpusStats.load(path).n_docs == len(CORPUS) and not before.endswith(b"\n")  # the bytes written before
    _crash_before_rename(monkeypatch)
    with pytest.raises(OSError, match="crash"):
        BM25Index(CORPUS[:2]).corpus_stats().save(path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["stats.json"]


def test_a_failed_qe_weights_save_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "w.json"
    Reranker("qe", qe="first-stage", features=["length"], weights={"qe:first-stage": 1.0, "length": 0.5}).save(path)
    before = path.read_text()
    assert before.endswith("}\n") and json.loads(before)["weights"] == {"qe:first-stage": 1.0, "length": 0.5}
    _crash_before_rename(monkeypatch)
    with pytest.raises(OSError, match="crash"):
        Reranker("qe", qe="first-stage", features=["length"], weights={"qe:first-stage": 1.0, "length": 2.0}).save(
            path)
    assert path.read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == ["w.json"]
