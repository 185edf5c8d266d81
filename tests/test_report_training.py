"""`surerank report --training`: the training curve and the base/student/teacher comparison read from a card.

Each chart is parsed as SVG: one point per logged training-loss step and per evaluation (plus step 0, the
untrained student), each at the pixel the card's value maps to (one affine map per axis, fitted on the extreme
points, holds for every point), the kept checkpoint's dashed line at its step, the comparison bars and table
carrying the card's numbers.  One card is written through the typed API (no torch needed); one comes from a
real tiny training run (the trainer's card, as `surerank train --student` writes it).  A broken or absent card
is refused naming the file and the field.
"""

from __future__ import annotations

import copy
import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from surerank.engine.checkpoint.card import TrainingCard
from surerank.engine.checkpoint.training_run import RESULT_FILE
from surerank.errors import InputError
from surerank.report import build_report, read_training

SVG = "{http://www.w3.org/2000/svg}"
FIGURE_NAMES = {"spearman_teacher": "Spearman with the teacher", "ndcg@10": "nDCG@10"}
PIXEL = 0.25  # coordinates are printed to 0.1 px; the fitted map adds at most this much


def handmade_card() -> TrainingCard:
    """A card shaped as the trainer writes it: three evaluations, the second kept, four logged losses."""
    evaluations = [{"loss": loss, "dev_finite": 1.0, "dev_score_spread": 0.2, "dev_spearman_teacher": rho,
                    "dev_ndcg@10": ndcg, "runtime": 1.5, "epoch": epoch, "step": step}
                   for loss, rho, ndcg, epoch, step in ((0.31, 0.52, 0.41, 1.0, 10), (0.22, 0.61, 0.47, 2.0, 20),
                                                        (0.25, 0.58, 0.45, 3.0, 30))]
    dev = {"base": {"finite": 1.0, "score_spread": 0.1, "spearman_teacher": 0.2, "ndcg@10": 0.33},
           "before_training": {"loss": 0.9, "dev_spearman_teacher": 0.2}, "evaluations": evaluations,
           "final": {"finite": 1.0, "score_spread": 0.2, "spearman_teacher": 0.61, "ndcg@10": 0.47},
           "teacher": {"finite": 1.0, "score_spread": 1.3, "spearman_teacher": 1.0, "ndcg@10": 0.55},
           "train_loss": [{"step": 1, "loss": 1.2}, {"step": 10, "loss": 0.5}, {"step": 20, "loss": 0.31},
                          {"step": 30, "loss": 0.27}],
           "best_checkpoint": "/work/m.work/checkpoints/checkpoint-20", "best": 0.61,
           "selected_by": "eval_dev_spearman_teacher", "worse_than_base": False, "resumed_from": None,
           "training_fit": {"examples": 16, "loss_before": 0.8, "loss_after": 0.3, "verdict": None}}
    return TrainingCard(student="cross-encoder", base_model="tiny-base", loss="mse", seed=7, epochs=3.0, steps=30,
                        teacher={"spec": {"name": "stopword-teacher"}, "pairs_scored": 320}, dev=dev,
                        resources={"seconds": 12.5, "train_seconds": 9.1, "pairs_per_s": 381.2,
                                   "peak_rss_mb": 612.3, "threads": 2})


def chart(html: str, plot: str) -> ET.Element:
    part = html.split(f'data-plot="{plot}">', 1)[1]
    return ET.fromstring(part[:part.index("</svg>") + len("</svg>")])


def points(svg: ET.Element) -> dict[str, list[tuple[float, float, float, float]]]:
    """Series label -> (x, value) as each point's hover title says, and its (cx, cy) pixel."""
    out: dict[str, list[tuple[float, float, float, float]]] = {}
    for circle in svg.iter(f"{SVG}circle"):
        label, shown = circle.find(f"{SVG}title").text.rsplit(": ", 1)
        x, y = shown.split(" → ")
        out.setdefault(label, []).append((float(x.replace(",", "")), float(y), float(circle.get("cx")),
                                          float(circle.get("cy"))))
    return out


def affine(pairs: list[tuple[float, float]]) -> Callable[[float], float]:
    """The map data -> pixel through the two extreme points (every other point must lie on it)."""
    (d0, p0), (d1, p1) = min(pairs), max(pairs)
    return lambda d: p0 + (d - d0) * (p1 - p0) / (d1 - d0)


def check_curve(svg: ET.Element, expected: dict[str, list[tuple[float, float]]], kept_step: int) -> None:
    """One point per expected (step, value), each where the axes put it, and the kept step's dashed line."""
    drawn = points(svg)
    assert set(drawn) == set(expected), (set(drawn), set(expected))
    everything = [p for label in expected for p in drawn[label]]
    to_x = affine([(x, cx) for x, _, cx, _ in everything])
    for label, want in expected.items():
        got = sorted(drawn[label])
        assert [(x, y) for x, y, _, _ in got] == [(float(s), round(v, 4)) for s, v in sorted(want)], label
        lines = [pl for pl in svg.iter(f"{SVG}polyline") if pl.find(f"{SVG}title").text == label]
        assert len(lines) == 1 and len(lines[0].get("points").split()) == len(want), label
    to_y = affine([(v, cy) for label, want in expected.items()
                   for (_, v), (_, _, _, cy) in zip(sorted(want), sorted(drawn[label]))])
    for label, want in expected.items():
        for (step, value), (_, _, cx, cy) in zip(sorted(want), sorted(drawn[label])):
            assert abs(cx - to_x(step)) <= PIXEL and abs(cy - to_y(value)) <= PIXEL, (label, step, value, cx, cy)
    low, high = min(v for w in expected.values() for _, v in w), max(v for w in expected.values() for _, v in w)
    assert to_y(high) < to_y(low)  # up is higher
    marks = svg.findall(f"{SVG}line[@data-mark='x-mark']")
    assert len(marks) == 1 and marks[0].find(f"{SVG}title").text == f"kept: step {kept_step}"
    assert abs(float(marks[0].get("x1")) - to_x(kept_step)) <= PIXEL


def expected_curves(card: dict[str, Any]) -> tuple[dict, dict, int]:
    """What the loss and dev charts must draw, from the card's JSON (read here independently of the report)."""
    dev = card["dev"]
    losses = {"training loss": [(p["step"], p["loss"]) for p in dev["train_loss"]],
              "dev loss": [(0, dev["before_training"]["loss"])] + [(e["step"], e["loss"]) for e in dev["evaluations"]]}
    figures = {label: [(0, dev["base"][name])] + [(e["step"], e[f"dev_{name}"]) for e in dev["evaluations"]]
               for name, label in FIGURE_NAMES.items() if name in dev["base"]}
    return losses, figures, int(dev["best_checkpoint"].rsplit("checkpoint-", 1)[1])


def bars(svg: ET.Element) -> dict[tuple[str, str], str]:
    """(series, category) -> the value each bar's title shows."""
    out = {}
    for rect in svg.iter(f"{SVG}rect"):
        if rect.get("data-mark") == "bar":
            head, value = rect.find(f"{SVG}title").text.rsplit(": ", 1)
            series, category = head.split(" · ")
            out[(series, category)] = value
    return out


def check_comparison(html: str, card: dict[str, Any]) -> None:
    dev = card["dev"]
    columns = {"untrained student (base)": dev["base"], "kept student": dev["final"]}
    if dev.get("teacher"):
        columns["teacher"] = dev["teacher"]
    drawn = bars(chart(html, "training-comparison-0"))
    want = {(series, FIGURE_NAMES[n]): f"{figures[n]:.4f}" for series, figures in columns.items()
            for n in FIGURE_NAMES if n in dev["base"]}
    assert drawn == want
    table = html.split('data-plot="training-comparison-0"', 1)[1].split("</table>", 1)[0]
    for name in FIGURE_NAMES:
        if name in dev["base"]:
            row = table.split(f"<td>{FIGURE_NAMES[name]}</td>", 1)[1].split("</tr>", 1)[0]
            for figures in columns.values():
                assert f"<td>{figures[name]:.4f}</td>" in row, (name, row)
            assert f"<td>{dev['final'][name] - dev['base'][name]:.4f}</td>" in row


def render(folder: Path) -> tuple[str, dict[str, Any]]:
    run = read_training(folder)
    return build_report(training=[run]), json.loads(Path(run.source).read_text())


def test_a_card_written_through_the_typed_api_draws_its_curve_and_comparison(tmp_path: Path) -> None:
    handmade_card().save(tmp_path)
    html, card = render(tmp_path)
    losses, figures, kept = expected_curves(card)
    assert kept == 20
    check_curve(chart(html, "training-loss-0"), losses, kept)
    check_curve(chart(html, "training-dev-0"), figures, kept)
    check_comparison(html, card)
    assert "Spearman with itself is 1" in html
    facts = html.split("<th>fact</th>", 1)[1]
    for fact, value in (("status", "saved"), ("loss", "mse"), ("epochs / steps", "3 / 30"), ("seed", "7"),
                        ("pairs/s (training)", "381.2"), ("peak RSS", "612.3 MiB"), ("dev worse than base", "no"),
                        ("kept checkpoint", "step 20 (epoch 2), by eval_dev_spearman_teacher = 0.6100"),
                        ("teacher", "{&quot;name&quot;: &quot;stopword-teacher&quot;}"), ("base model", "tiny-base"),
                        ("fit of its training lists", "loss 0.8 → 0.3 on 16 examples")):
        assert f"<td>{fact}</td><td>{value}</td>" in facts, fact
    assert 'data-sections="training"' in html


def test_a_collapsed_run_is_reported_with_its_reason_and_the_points_it_cannot_draw(tmp_path: Path) -> None:
    data = handmade_card().to_dict()
    data["dev"]["train_loss"][3]["loss"] = math.nan  # a diverged step: json writes NaN
    data["dev"]["worse_than_base"] = True
    reason = "dev scores are not finite (NaN/inf): the weights diverged"
    (tmp_path / RESULT_FILE).write_text(json.dumps({**data, "status": "collapsed", "collapse": reason,
                                                    "output": None}))
    html = build_report(training=[read_training(tmp_path)])
    assert f"collapsed: {reason}; no model saved" in html
    assert "Not drawn (not finite): 1 training loss." in html
    assert len(points(chart(html, "training-loss-0"))["training loss"]) == 3
    assert "yes: the kept model is below the untrained student on dev" in html
    assert "fits them, worse on dev: memorised" not in html  # verdict None on the card: none drawn


@pytest.mark.parametrize(("fit", "said"), [
    ({"examples": 8, "loss_before": 0.4, "loss_after": 0.45, "verdict": "not_fitting"},
     "loss 0.4 → 0.45 on 8 examples; <span class=\"down\">no better than untrained: the learning rate"),
    ({"examples": 8, "loss_before": 0.4, "loss_after": 0.1, "verdict": "memorised"},
     "loss 0.4 → 0.1 on 8 examples; <span class=\"down\">fits them, worse on dev: memorised"),
    (None, "not recorded (a card written before the fit check)")])
def test_the_fit_check_is_reported_as_the_card_says(tmp_path: Path, fit: dict[str, Any] | None, said: str) -> None:
    data = handmade_card().to_dict()
    if fit is None:
        data["dev"].pop("training_fit")
    else:
        data["dev"]["training_fit"] = fit
    (tmp_path / "training_card.json").write_text(json.dumps(data))
    run = read_training(tmp_path)
    assert (run.dev.training_fit.verdict if run.dev.training_fit else None) == (fit or {}).get("verdict")
    assert f"<td>fit of its training lists</td><td>{said}" in build_report(training=[run])


BREAKS: list[tuple[Callable[[dict[str, Any]], Any], str]] = [
    (lambda d: d["dev"]["evaluations"][0].pop("step"), "dev.evaluations[0].step"),
    (lambda d: d["dev"]["train_loss"][1].update(loss="high"), "dev.train_loss[1].loss"),
    (lambda d: d["dev"].update(best_checkpoint="/w/checkpoints/checkpoint-25"), "dev.best_checkpoint"),
    (lambda d: d["dev"].update(best_checkpoint="/w/best"), "dev.best_checkpoint"),
    (lambda d: d["dev"].pop("base"), "dev.base"),
    (lambda d: d["dev"]["final"].update(ndcg="0.4"), "dev.final.ndcg"),
    (lambda d: d["resources"].pop("peak_rss_mb"), "resources.peak_rss_mb"),
    (lambda d: d["teacher"].pop("spec"), "teacher.spec"),
    (lambda d: d.update(kind="surerank.eval"), "kind"),
    (lambda d: d["dev"]["training_fit"].update(verdict="overfit"), "dev.training_fit.verdict"),
    (lambda d: d["dev"]["training_fit"].pop("loss_after"), "dev.training_fit.loss_after"),
]


@pytest.mark.parametrize(("breaks", "field"), BREAKS, ids=[f for _, f in BREAKS])
def test_a_broken_card_is_refused_naming_the_file_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           breaks: Callable[[dict[str, Any]], Any],
                                                           field: str) -> None:
    from surerank.cli import main

    data = copy.deepcopy(handmade_card().to_dict())
    breaks(data)
    path = tmp_path / "model" / "training_card.json"
    path.parent.mkdir()
    path.write_text(json.dumps(data))
    out = tmp_path / "r.html"
    assert main(["report", "--training", str(path.parent), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and f"'{field}'" in err, err
    assert not out.exists()


def test_an_absent_card_a_bad_result_and_an_untyped_run_are_refused(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from surerank.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", "--training", str(empty), "--output", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert str(empty) in err and "training_card.json" in err and RESULT_FILE in err, err
    (tmp_path / RESULT_FILE).write_text(json.dumps({**handmade_card().to_dict(), "status": "collapsed",
                                                    "collapse": None}))
    with pytest.raises(InputError, match=f"{tmp_path / RESULT_FILE}: field 'collapse'"):
        read_training(tmp_path)
    (tmp_path / RESULT_FILE).write_text('{"kind": "surerank.training-card", ')
    with pytest.raises(InputError, match=f"{tmp_path / RESULT_FILE}: not a readable training card"):
        read_training(tmp_path / RESULT_FILE)
    with pytest.raises(InputError, match=r"training\[0\]: expected a TrainingRun, got dict"):
        build_report(training=[handmade_card().to_dict()])  # type: ignore[list-item]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny cross-encoder distilled for real from test_train's stop-word teacher, with DL19 judgments (so the
    dev split has nDCG@10 too), 20 steps evaluated every 5; the model folder the trainer saved."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("accelerate")
    pytest.importorskip("datasets")
    from surerank.eval.datasets import dataset_file
    from surerank.train import train_model
    from test_train import config, lists, tiny

    tmp = tmp_path_factory.mktemp("report-training")
    base = tiny(tmp_path_factory.getbasetemp() / "tiny-ce", "cross-encoder")
    return train_model(config(tmp, "cross-encoder", base, qrels=dataset_file("dl19", "qrels"), epochs=2,
                              eval_steps=5), lists(12, 8)).output


def test_a_real_training_run_draws_every_logged_step_and_evaluation(trained: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from surerank.cli import main

    out = tmp_path / "training.html"
    assert main(["report", "--training", str(trained), "--output", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    html = out.read_text()
    card = json.loads((trained / "training_card.json").read_text())
    losses, figures, kept = expected_curves(card)
    assert len(card["dev"]["evaluations"]) >= 2 and set(figures) == set(FIGURE_NAMES.values())
    check_curve(chart(html, "training-loss-0"), losses, kept)
    check_curve(chart(html, "training-dev-0"), figures, kept)
    check_comparison(html, card)
    work = Path(str(trained) + ".work")
    again, _ = render(work)  # the work folder's training_result.json: the same run, its status said
    assert "<td>status</td><td>saved</td>" in again
