"""The demo set that ships in the package (issue 23): found with no data folder, and the same data as the folder's."""

from __future__ import annotations

import pytest

from surerank.errors import InputError
from surerank.eval import datasets
from surerank.eval.metrics import evaluate
from surerank.formats import format_from_suffix, lists_to_run
from surerank.types import RankedList


@pytest.fixture
def no_data_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a fresh clone with nothing beside it: no SURERANK_DATA, no ../shared/data."""
    monkeypatch.delenv("SURERANK_DATA", raising=False)

    def nowhere() -> None:
        raise InputError("benchmark data not found")

    monkeypatch.setattr(datasets, "data_root", nowhere)


def test_packaged_dl19_is_found_without_a_data_folder(no_data_folder) -> None:
    queries_path, qrels_path = datasets.trec_dl_paths(19)
    assert queries_path.parent == datasets.PACKAGED and qrels_path.parent == datasets.PACKAGED
    assert format_from_suffix(queries_path) == "rankgpt" and format_from_suffix(qrels_path) == "trec"
    assert datasets.dataset_file("dl19", "qrels") == qrels_path
    queries, qrels = datasets.load_trec_dl("dl19")
    assert len(queries) == 43 and all(len(q.candidates) == 100 for q in queries)
    bm25 = evaluate(lists_to_run(RankedList.from_order(q, list(range(len(q.candidates)))) for q in queries), qrels)
    assert round(bm25.aggregate["nDCG@10"], 4) == 0.5058  # the BM25 figure of the data README


def test_only_dl19_travels_with_the_package(no_data_folder) -> None:
    with pytest.raises(InputError, match="only dl19 ships with surerank; set SURERANK_DATA"):
        datasets.trec_dl_paths(20)
    assert sorted(p.name for p in datasets.PACKAGED.glob("*.gz")) == [
        "dl19-bm25-top100.json.gz", "qrels.dl19-passage.txt.gz"]
    assert sum(p.stat().st_size for p in datasets.PACKAGED.glob("*.gz")) < 700_000  # small: gzip of two files


def test_packaged_copy_is_the_data_folders(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        folder = datasets.data_root() / "trec-dl"
    except InputError:
        pytest.skip("no data folder to compare with")
    if not (folder / "dl19-bm25-top100.json").is_file():
        pytest.skip("no DL19 in the data folder")
    from surerank.formats import read_qrels, read_rankgpt_json

    packaged = [read_rankgpt_json(datasets.PACKAGED / "dl19-bm25-top100.json.gz"),
                read_qrels(datasets.PACKAGED / "qrels.dl19-passage.txt.gz")]
    assert packaged == [read_rankgpt_json(folder / "dl19-bm25-top100.json"),
                        read_qrels(folder / "qrels.dl19-passage.txt")]


def test_a_file_named_like_a_dataset_wins(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dl19").write_text("1 0 a 1\n")
    assert datasets.dataset_file("dl19", "qrels").resolve() == (tmp_path / "dl19").resolve()
    assert datasets.dataset_file("my.qrels", "qrels").name == "my.qrels"


def test_commands_take_dl19_for_its_files(no_data_folder, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from surerank.cli import main

    run = tmp_path / "bm25.run"
    assert main(["rerank", "--input", "dl19", "--ranker", "first-stage", "--output", str(run)]) == 0
    assert main(["eval", "--run", str(run), "--qrels", "dl19"]) == 0
    assert "0.5058" in capsys.readouterr().out
