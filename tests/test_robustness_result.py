"""The typed robustness document (issue 23): what the run returns, the file holds, and the report reads.

``RobustnessResult`` carries ``kind``/``version`` like every other document, survives a JSON round trip
field for field, and the report refuses an untyped, other or unknown-version document naming the file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from surerank.cli import main
from surerank.errors import InputError
from surerank.eval.datasets import load_trec_dl
from surerank.registry import create
from surerank.report import build_report, read_robustness
from surerank.robustness import KIND, VERSION, RobustnessConfig, RobustnessResult, format_table, run_robustness
from surerank.types import Query


@pytest.fixture(scope="module")
def result() -> RobustnessResult:
    queries, qrels = load_trec_dl(19)
    cut = [Query(text=q.text, candidates=q.candidates[:20], id=q.id, metadata=q.metadata) for q in queries[:4]]
    config = RobustnessConfig(shuffles=2, typo_seeds=(0,), typo_kinds=("swap", "keyboard"), depths=(10, 20),
                              position_list_size=4)
    return run_robustness(create("bm25"), cut, qrels, config, dataset="dl19")


def test_round_trip_keeps_every_field(result: RobustnessResult) -> None:
    document = json.loads(json.dumps(result.to_dict()))
    assert (document["kind"], document["version"]) == (KIND, VERSION) == ("surerank.robustness", 1)
    assert "schema" not in document
    again = RobustnessResult.from_dict(document, where="r.json")
    assert again == result
    assert again.to_dict() == document
    assert again.typos is not None and set(again.typos.kinds) == {"swap", "keyboard"}
    assert again.depth is not None and [row.depth for row in again.depth.depths] == [10, 20]
    assert format_table([again]) == format_table([result])


def test_a_callers_extra_fields_and_missing_checks_survive(result: RobustnessResult) -> None:
    document = {**result.to_dict(), "pairs_per_s": 123.0}
    del document["position"]
    again = RobustnessResult.from_dict(document, where="r.json")
    assert again.position is None and again.extra == {"pairs_per_s": 123.0}
    assert again.to_dict() == document


def test_files_of_before_the_kind_header_are_read_as_version_1(result: RobustnessResult) -> None:
    document = result.to_dict()
    del document["kind"], document["version"]
    legacy = {"schema": "surerank.robustness/1", **document}
    assert RobustnessResult.from_dict(legacy, where="old.json") == result


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: (d.pop("kind"), d.pop("version")), "field 'kind' is missing (it has no 'schema' either)"),
    (lambda d: (d.pop("kind"), d.pop("version"), d.update(schema="surerank.robustness/0")),
     "field 'kind' is missing (its 'schema' is 'surerank.robustness/0')"),
    (lambda d: d.update(version=2), "field 'version' must be one of 1 for surerank.robustness"),
    (lambda d: d.update(kind="surerank.eval"), "field 'kind' must be 'surerank.robustness'"),
    (lambda d: d["trap"].pop("bm25"), "field 'trap.bm25' is missing"),
])
def test_report_refuses_an_untyped_or_unknown_document_naming_the_file(
        result: RobustnessResult, tmp_path: Path, capsys: pytest.CaptureFixture[str], change, message) -> None:
    document = result.to_dict()
    change(document)
    path = tmp_path / "robustness-bm25.json"
    path.write_text(json.dumps(document))
    with pytest.raises(InputError, match=re.escape(f"robustness-bm25.json: {message}")):
        read_robustness(document, str(path))
    html = tmp_path / "r.html"
    assert main(["report", "--robustness", str(path), "--output", str(html)]) == 2
    assert f"{path}: " in capsys.readouterr().err and not html.exists()


def test_build_report_draws_typed_results_and_refuses_dicts(result: RobustnessResult) -> None:
    html = build_report(robustness=[result])
    for check in ("order", "position", "typos", "trap", "depth"):
        assert f'data-plot="robust-{check}-dl19"' in html, check
    with pytest.raises(InputError, match=r"robustness\[0\]: expected a RobustnessResult, got dict"):
        build_report(robustness=[result.to_dict()])
