"""surerank.train's model training on tiny random-weight students (CPU, a few seconds each).

The teacher is a real ranker of this file: the share of stop words among a passage's first 40 words, a signal a
2-layer, 32-wide student can learn in a hundred steps.  Each test trains for real; nothing is hard-coded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("accelerate")
pytest.importorskip("datasets")

from arch_fixtures import build_model, write_sentence_transformers_files
from surerank.eval.datasets import dataset_file, load_trec_dl
from surerank.ranker import Scores, ScoringRanker
from surerank.types import Cost, Query

TESTS = Path(__file__).parent
STOP = ("the", "of", "and", "a", "to", "in", "is")


class StopwordTeacher(ScoringRanker):
    """Scores a passage by its share of stop words; appends the pairs it is asked for to ``log`` (if given)."""

    name = "stopword-teacher"

    def __init__(self, log: str | None = None, fail_after: int | None = None):
        self.log = log
        self.fail_after = fail_after  # raise after this many calls (a teacher killed halfway)
        self.calls = 0

    def score(self, queries: list[Query]) -> list[Scores]:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("teacher went away")
        self.calls += 1
        if self.log:
            with open(self.log, "a") as f:
                f.writelines(f"{q.id}\t{c.id}\n" for q in queries for c in q.candidates)
        return [Scores(np.array([sum(w.lower() in STOP for w in c.text.split()[:40]) / 4 for c in q.candidates]),
                       cost=Cost(calls=1, details={"pairs": len(q.candidates)})) for q in queries]


def lists(n: int = 20, k: int = 16) -> list[Query]:
    queries, _ = load_trec_dl(19)
    return [Query(text=q.text, candidates=q.candidates[:k], id=q.id) for q in queries[:n]]


def tiny(folder: Path, kind: str) -> Path:
    """A tiny BERT at transformers' usual init scale: a cross-encoder, or a mean-pooled bi-encoder."""
    if (folder / "config.json").exists():
        return folder
    model = build_model(folder, "bert", "cross-encoder" if kind == "cross-encoder" else "encoder", max_length=128,
                        config_overrides={"initializer_range": 0.02})
    if kind == "bi-encoder":
        write_sentence_transformers_files(model, "new", "mean", 32, 128)
    return model


def config(tmp: Path, student: str, base: Path, **overrides: Any) -> Any:
    from surerank.train import TrainConfig

    settings: dict[str, Any] = {"teacher": StopwordTeacher(), "candidates": 16, "epochs": 4,
                                "learning_rate": 1e-3, "batch_size": 8, "max_length": 64, "eval_steps": 20,
                                "patience": 0, "progress": False, "seed": 0}
    settings.update(overrides)
    return TrainConfig(output=tmp / "model", student=student, base_model=str(base), **settings)


@pytest.fixture(scope="module")
def cross_encoder_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from surerank.train import train_model

    tmp = tmp_path_factory.mktemp("ce")
    base = tiny(tmp_path_factory.getbasetemp() / "tiny-ce", "cross-encoder")
    return train_model(config(tmp, "cross-encoder", base), lists())


def test_distilled_cross_encoder_moves_toward_its_teacher(cross_encoder_run: Any) -> None:
    dev = cross_encoder_run.card.dev
    losses = [e["loss"] for e in dev["evaluations"]]
    assert max(losses) < dev["before_training"]["loss"] / 2, (dev["before_training"], losses)  # dev loss down
    assert dev["final"]["spearman_teacher"] > dev["base"]["spearman_teacher"] + 0.2, dev  # rank correlation up
    assert dev["selected_by"] == "eval_dev_spearman_teacher" and dev["worse_than_base"] is False
    fit = dev["training_fit"]  # the kept student fits a fixed sample of its own training lists better
    assert fit["loss_after"] < fit["loss_before"] / 2 and fit["verdict"] is None and 0 < fit["examples"] <= 16 * 16
    assert dev["teacher"]["spearman_teacher"] == pytest.approx(1.0)  # the teacher's own dev figures: the ceiling
    assert dev["final"]["spearman_teacher"] < dev["teacher"]["spearman_teacher"]
    assert cross_encoder_run.card.teacher["pairs_scored"] == 20 * 16
    assert cross_encoder_run.card.teacher["cost"]["calls"] == 20  # the teacher's cost trace, kept
    res = cross_encoder_run.card.resources
    assert res["peak_rss_mb"] > 0
    # pairs/s counts optimiser steps only: their time is part of the loop's, which also holds the evaluations
    assert res["steps_this_run"] == cross_encoder_run.card.steps and 0 < res["step_seconds"] < res["train_seconds"]
    assert res["pairs_per_s"] > cross_encoder_run.card.data["train_pairs_per_epoch"] * cross_encoder_run.card.epochs \
        / res["train_seconds"]


def test_saved_cross_encoder_loads_on_onnx_at_parity_and_names_its_card(cross_encoder_run: Any) -> None:
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder

    from surerank import Reranker
    from surerank.engine.checkpoint.card import TrainingCard

    folder = cross_encoder_run.output
    card = TrainingCard.load(folder / "training_card.json")
    assert card.student == "cross-encoder" and card.loss == "mse" and card.versions["sentence-transformers"]
    q = lists(21)[20]  # a query the student never saw
    pairs = [(q.text, c.text) for c in q.candidates]
    reference = CrossEncoder(str(folder)).predict(pairs, activation_fn=torch.nn.Identity())
    ranker = Reranker("cross-encoder", model=str(folder), precision="fp32")
    ranked = ranker.rank(q.text, [c.text for c in q.candidates])
    ours = np.array([it.score for it in sorted(ranked.items, key=lambda it: it.index)])
    assert ranker.describe()["backend"] == "onnx"
    assert np.abs(ours - reference).max() <= 1e-3
    info = Reranker("cross-encoder", model=str(folder)).describe()  # the default precision too
    assert info["training_card"]["loss"] == "mse" and info["training_card"]["path"].endswith("training_card.json")


def test_distilled_bi_encoder_loads_on_onnx_at_parity(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    from sentence_transformers import SentenceTransformer

    from surerank import Reranker
    from surerank.train import train_model

    base = tiny(tmp_path_factory.getbasetemp() / "tiny-bi", "bi-encoder")
    result = train_model(config(tmp_path, "bi-encoder", base, loss="kl", temperature=0.1, epochs=2), lists())
    assert result.card.student == "bi-encoder" and result.card.steps > 0
    q = lists(21)[20]
    model = SentenceTransformer(str(result.output), device="cpu")
    qv, dv = model.encode([q.text]), model.encode([c.text for c in q.candidates])
    reference = (dv @ qv[0]) / (np.linalg.norm(dv, axis=1) * np.linalg.norm(qv[0]))
    ranker = Reranker("embedding", model=str(result.output), precision="fp32")
    ranked = ranker.rank(q.text, [c.text for c in q.candidates])
    ours = np.array([it.score for it in sorted(ranked.items, key=lambda it: it.index)])
    assert np.abs(ours - reference).max() <= 1e-4
    assert ranker.describe()["training_card"]["student"] == "bi-encoder"


def test_the_same_seed_trains_the_same_student_and_another_seed_does_not(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Dropout, the data order and the dev split all follow the seed: two runs of one seed are bit-identical."""
    from safetensors.numpy import load_file

    from surerank.train import train_model

    base = tiny(tmp_path_factory.getbasetemp() / "tiny-bi", "bi-encoder")
    weights = []
    for run, seed in enumerate((0, 0, 1)):
        result = train_model(config(tmp_path / str(run), "bi-encoder", base, loss="kl", temperature=0.1, epochs=1,
                                    seed=seed), lists(12, 8))
        weights.append(load_file(str(result.output / "model.safetensors")))
    assert all(np.array_equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(np.array_equal(weights[0][k], weights[2][k]) for k in weights[0])


@pytest.mark.parametrize("kind", ["bi-encoder", "cross-encoder"])
def test_no_dropout_keeps_the_student_deterministic_while_it_trains(
        kind: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """dropout=False: the trainer's model.train() leaves every dropout off (two forward passes agree); the model's
    own dropout (the default) makes them differ."""
    import torch

    from surerank.train.student import load_student

    base = tiny(tmp_path_factory.getbasetemp() / f"tiny-{kind[:2]}", kind)
    outputs = {}
    for dropout in (True, False):
        model, _ = load_student(config(tmp_path, kind, base, dropout=dropout), base)
        model.train()
        assert model.training is dropout
        texts = ["a query about dropout", "another text, a little longer than the first"]
        with torch.no_grad():
            if kind == "bi-encoder":
                features = model.tokenize(texts)
                runs = [model(dict(features))["sentence_embedding"] for _ in range(2)]
            else:
                features = model.tokenizer(texts[:1], texts[1:], return_tensors="pt")
                runs = [model.model(**features).logits for _ in range(2)]
        outputs[dropout] = torch.equal(runs[0], runs[1])
    assert outputs == {True: False, False: True}


def test_a_run_without_dropout_says_so_on_its_card(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    from surerank.train import train_model

    base = tiny(tmp_path_factory.getbasetemp() / "tiny-bi", "bi-encoder")
    card = train_model(config(tmp_path, "bi-encoder", base, loss="kl", temperature=0.1, max_steps=2,
                              dropout=False), lists(12, 8)).card
    assert card.schedule["dropout"] is False and card.steps == 2


def test_max_steps_stops_training_within_the_first_epoch(tmp_path: Path,
                                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    from surerank.train import train_model

    base = tiny(tmp_path_factory.getbasetemp() / "tiny-ce", "cross-encoder")
    card = train_model(config(tmp_path, "cross-encoder", base, max_steps=3, eval_steps=None), lists(12, 8)).card
    assert card.steps == 3 and card.resources["steps_this_run"] == 3 and card.schedule["max_steps"] == 3
    assert 0 < card.epochs < 1, card.epochs  # 4 epochs asked: max_steps stopped it first


def test_collapse_is_detected_and_nothing_is_saved(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    from surerank.train import TrainingCollapsedError, train_model

    base = tiny(tmp_path_factory.getbasetemp() / "tiny-ce", "cross-encoder")
    cfg = config(tmp_path, "cross-encoder", base, learning_rate=5.0, epochs=2)
    with pytest.raises(TrainingCollapsedError, match=r"constant|not finite") as error:
        train_model(cfg, lists(12, 8))
    assert not (tmp_path / "model").exists()
    result = json.loads(Path(error.value.result["result_file"]).read_text())
    assert result["status"] == "collapsed" and result["output"] is None and result["collapse"]


def test_the_fit_check_tells_a_learning_rate_too_high_from_memorising() -> None:
    from surerank.train.student import fit_verdict

    assert fit_verdict(0.36, 0.44, worse_on_dev=True) == "not_fitting"  # in-sample loss rose: lr too high
    assert fit_verdict(0.36, 0.36, worse_on_dev=False) == "not_fitting"
    assert fit_verdict(0.36, 0.09, worse_on_dev=True) == "memorised"  # fits its lists, worse on held-out ones
    assert fit_verdict(0.36, 0.09, worse_on_dev=False) is None
    assert fit_verdict(float("nan"), 0.1, worse_on_dev=True) is None  # a diverged run: collapse says it


def test_bce_stuck_at_ln2_counts_as_collapse() -> None:
    from surerank.train.student import collapse_reason

    spread = {"finite": 1.0, "score_spread": 0.2}
    assert "ln 2" in collapse_reason(spread, 1e-5, "bce", [0.9, 0.6933, 0.6929, 0.6931])
    assert collapse_reason(spread, 1e-5, "bce", [0.9, 0.5, 0.4, 0.3]) is None
    assert collapse_reason(spread, 1e-5, "mse", [0.6933, 0.6929, 0.6931]) is None


def test_teacher_is_called_once_per_pair_across_an_interrupted_run(tmp_path: Path) -> None:
    from surerank.train import score_with_teacher

    log, cache, queries = tmp_path / "calls.tsv", tmp_path / "cache.json", lists(12, 8)
    with pytest.raises(RuntimeError, match="went away"):  # the first group (8 queries) cached, then it fails
        score_with_teacher(StopwordTeacher(str(log), fail_after=1), queries, cache)
    assert len(log.read_text().splitlines()) == 8 * 8
    scores = score_with_teacher(StopwordTeacher(str(log)), queries, cache)
    calls = log.read_text().splitlines()
    assert len(calls) == len(set(calls)) == 12 * 8  # every pair once, none twice
    assert scores.pairs_scored == 12 * 8 and scores.cache_hits == 8 * 8
    assert scores.cost.calls == 12  # both runs' cost trace
    again = score_with_teacher(StopwordTeacher(str(log)), queries, cache)
    assert again.cache_hits == 12 * 8 and len(log.read_text().splitlines()) == 12 * 8


KILLED_RUN = """
import sys, time
sys.path.insert(0, {tests!r})
from pathlib import Path
from transformers import TrainerCallback
from test_train import StopwordTeacher, config, lists
from surerank.train import train_model

class Hang(TrainerCallback):
    def on_save(self, args, state, control, **kw):
        Path({marker!r}).write_text(str(state.global_step))
        time.sleep(600)

cfg = config(Path({tmp!r}), "cross-encoder", Path({base!r}), teacher=StopwordTeacher({log!r}), eval_steps=2,
             epochs=1)
train_model(cfg, lists(12, 8), callbacks=[Hang()] if {hang!r} else [])
"""


def test_a_run_killed_mid_epoch_resumes_from_its_checkpoint(tmp_path: Path,
                                                            tmp_path_factory: pytest.TempPathFactory) -> None:
    from surerank.train import train_model

    base = tiny(tmp_path_factory.getbasetemp() / "tiny-ce", "cross-encoder")
    marker, log = tmp_path / "saved", tmp_path / "calls.tsv"
    script = KILLED_RUN.format(tests=str(TESTS), marker=str(marker), tmp=str(tmp_path), base=str(base),
                               log=str(log), hang=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    _, err = proc.communicate()
    assert marker.read_text() == "2", err.decode()[-2000:]  # killed after its first checkpoint, mid-epoch
    # 12 queries → 10 train lists of 8 = 80 rows, 10 steps an epoch: step 2 is mid-epoch
    result = train_model(config(tmp_path, "cross-encoder", base, teacher=StopwordTeacher(str(log)),
                                eval_steps=2, epochs=1), lists(12, 8))
    assert result.card.dev["resumed_from"].endswith("checkpoint-2")
    assert result.card.steps == -(-result.card.data["train_examples"] // 8) > 2  # a whole epoch
    calls = log.read_text().splitlines()
    assert len(calls) == len(set(calls)) == 12 * 8  # the teacher saw every pair once across both runs
    assert result.card.teacher["cache_hits_this_run"] == 12 * 8


def test_cli_fine_tunes_a_cross_encoder_on_judgments_from_a_bi_encoder_seed(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    from surerank.cli import main

    base = tiny(tmp_path_factory.getbasetemp() / "tiny-bi", "bi-encoder")
    out = tmp_path / "reranker"
    code = main(["train", "--student", "cross-encoder", "--model", str(base), "--input", "dl19", "--qrels", "dl19",
                 "--loss", "bce", "--candidates", "16", "--epochs", "1", "--lr", "1e-3", "--max-length", "64",
                 "--no-progress", "--output", str(out)])
    assert code == 0, capsys.readouterr().err
    printed = json.loads(capsys.readouterr().out)
    assert printed["status"] == "saved" and "ndcg@10" in printed["dev"]
    card = json.loads((out / "training_card.json").read_text())
    assert printed["training_fit"] == card["dev"]["training_fit"] and printed["training_fit"]["examples"] > 0
    assert card["seeded_head"] is True and card["judgments"] == str(dataset_file("dl19", "qrels"))
    mining = card["data"]["mining"]
    assert mining["positives"] > 0 and mining["negatives"] > 0 and mining["scored_by"].startswith("first stage")
    assert "fresh, randomly initialised head" in caplog.text


def test_importing_surerank_train_loads_no_torch() -> None:
    code = ("import sys, surerank, surerank.train, surerank.cli.train; "
            "assert 'torch' not in sys.modules and 'sentence_transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_mined_negatives_keep_likely_false_negatives_out() -> None:
    from surerank.train.examples import judgment_examples
    from surerank.types import Candidate

    q = Query(text="q", id="q1", candidates=tuple(Candidate(id=d, text=f"passage {d}") for d in "pabcn"))
    qrels = {"q1": {"p": 2, "n": 0}}  # p relevant, n judged non-relevant, a b c unjudged
    teacher = {"q1": {"p": 5.0, "a": 4.9, "b": 3.0, "c": 1.0, "n": 9.0}}
    ex = judgment_examples("cross-encoder", "bce", [q], qrels, seed=0, negatives=10, margin=1.0, teacher=teacher)
    kept = {t for t, label in zip(ex.columns["passage"], ex.columns["label"]) if label == 0.0}
    assert kept == {"passage b", "passage c", "passage n"}  # a is within the margin of p; n is judged: kept
    assert ex.mining.dropped_by_margin == 1 and ex.mining.judged_negatives == 1 and ex.mining.scored_by == "teacher"


def test_a_broken_training_card_is_refused_naming_the_field(tmp_path: Path) -> None:
    from surerank.engine.checkpoint.card import TrainingCard, card_summary
    from surerank.errors import InputError

    card = TrainingCard(student="cross-encoder", base_model="m", loss="mse", seed=0, epochs=1.0, steps=3)
    card.save(tmp_path)
    assert card_summary(tmp_path)["loss"] == "mse"
    data = card.to_dict()
    del data["steps"]
    (tmp_path / "training_card.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="field 'steps' is missing"):
        card_summary(tmp_path)
