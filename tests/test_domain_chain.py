"""Domain adaptation with no judgments, end to end on CPU (issue 24, must-show 3's chain): an LLM on loopback (the
real OpenAI-compatible client against the stand-in server) writes queries for a tiny corpus, the round trip keeps
those whose passage comes back, a real toy teacher scores the kept queries' BM25 lists, a tiny random bi-encoder
learns them, and the saved student loads on the default backend.  Each link is checked where it can break."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("accelerate")
pytest.importorskip("datasets")

from arch_fixtures import build_model, write_sentence_transformers_files
from surerank import Reranker
from surerank.formats import read_rankgpt_json
from surerank.llm import LLMRequest
from surerank.llm.openai import OpenAICompatibleBackend
from surerank.ranker import Scores, ScoringRanker
from surerank.testing.judge import Judge
from surerank.testing.llm_server import StandInServer
from surerank.train import SynthesisConfig, TrainConfig, synthesise, train_model
from surerank.types import Candidate, Cost, Query

TOPICS = ["panel flutter cylindrical shells", "blunt body hypersonic heating", "boundary layer suction transition",
          "stiffened panel buckling compression", "heat shield ablation entry", "sonic boom stratified atmosphere",
          "rotor blade icing accretion", "nozzle throat erosion propellant", "wing tip vortex wake",
          "landing gear shimmy damping", "cabin pressure fatigue cracks", "turbine disk creep rupture"]
# every passage says "wind tunnel", so every query's BM25 list holds the whole corpus, its topic words first
CORPUS = [Candidate(f"d{i}", f"{topic.capitalize()}: measured in a wind tunnel, with a wind tunnel model of the "
                             f"{topic} and its analysis.") for i, topic in enumerate(TOPICS)]


class TopicWriter(Judge):
    """Writes "<topic> wind tunnel" for the passage in the request's last user turn; for d0 it writes d11's topic,
    a query whose own passage BM25 puts below another: the round trip must drop it."""

    def answer(self, request: LLMRequest) -> tuple[str, dict[str, float]]:
        passage = request.messages[-1][1]
        index = next(i for i, c in enumerate(CORPUS) if c.text == passage)
        return f"{TOPICS[11 if index == 0 else index]} wind tunnel", {}


class OverlapTeacher(ScoringRanker):
    """A real teacher: the share of the query's words a passage holds (its topic's passage scores highest)."""

    name = "overlap-teacher"

    def __init__(self) -> None:
        self.pairs = 0

    def score(self, queries: list[Query]) -> list[Scores]:
        out = []
        for q in queries:
            words = set(re.findall(r"\w+", q.text.lower()))
            self.pairs += len(q.candidates)
            out.append(Scores(np.array([len(words & set(re.findall(r"\w+", c.text.lower()))) / len(words)
                                        for c in q.candidates]), cost=Cost(calls=1)))
        return out


def tiny_bi_encoder(folder: Path) -> Path:
    model = build_model(folder, "bert", "encoder", max_length=64, config_overrides={"initializer_range": 0.02})
    write_sentence_transformers_files(model, "new", "mean", 32, 64)
    return model


def test_synthetic_queries_round_trip_teacher_student_and_the_default_backend(tmp_path: Path) -> None:
    # 1. the LLM link: one request per passage over HTTP, the chat prompt's last user turn is the passage
    with StandInServer(judge=TopicWriter()) as server:
        llm = OpenAICompatibleBackend(model="stand-in-judge", base_url=server.base_url, timeout=5.0, backoff=0.01)
        result = synthesise(CORPUS, tmp_path / "synthetic", llm, SynthesisConfig(k=1, depth=12))
        assert server.requests == len(CORPUS)
        assert server.bodies[0]["messages"][0]["role"] == "system"  # the chat prompt's instruction
    # 2. the round trip over the whole corpus: d0's query brings d11 first, so it is dropped by name
    assert result.counts["parsed"] == 12 and result.counts["kept"] == 11
    assert result.dropped == {"not_in_top_k": 1}
    lists = read_rankgpt_json(result.files["lists"])
    assert all(len(q.candidates) == 12 and q.candidates[0].id == q.id.split("-")[1] for q in lists)
    assert "syn-d0-0" not in {q.id for q in lists}
    # 3. the teacher scores each kept list's first `candidates` passages, once
    teacher = OverlapTeacher()
    base = tiny_bi_encoder(tmp_path / "tiny")
    config = TrainConfig(output=tmp_path / "student", student="bi-encoder", base_model=str(base), teacher=teacher,
                         loss="kl", candidates=6, epochs=3, learning_rate=1e-3, batch_size=1, temperature=0.1,
                         max_length=64, patience=0, progress=False, seed=0)
    card = train_model(config, lists).card
    assert teacher.pairs == 11 * 6 and card.teacher is not None and card.teacher["pairs_scored"] == 11 * 6
    # 4. the student learned from those lists
    assert card.student == "bi-encoder" and card.loss == "kl" and card.steps > 0
    assert card.data["queries"] == 11 and card.data["train_queries"] + card.data["dev_queries"] == 11
    assert card.data["lists_cut_to_candidates"] == 11 and card.data["candidates"] == 6
    # 5. the saved folder is what the default backend ranks with, and its weights are the trained ones
    student = Reranker("embedding", model=str(config.output))
    assert student.describe()["backend"] == "onnx"
    assert student.describe()["training_card"]["student"] == "bi-encoder"
    query = "rotor blade icing wind tunnel"
    texts = [c.text for c in CORPUS]
    trained = [it.score for it in sorted(student.rank(query, texts).items, key=lambda it: it.index)]
    untrained = [it.score for it in sorted(Reranker("embedding", model=str(base)).rank(query, texts).items,
                                           key=lambda it: it.index)]
    assert not np.allclose(trained, untrained, atol=1e-4)
