"""Embedding distillation (``loss="embedding-mse"``): the alignment of a teacher's space to a student's, the
teacher's vectors cached, and a tiny random student trained for real toward the embedded all-MiniLM-L6-v2 (on
the default ONNX backend) as its teacher."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from surerank.errors import InputError
from surerank.train.embedding_targets import TrainingTexts, align, teacher_vectors
from surerank.types import Candidate, Query


def _orthonormal(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((rows, cols)))
    return q


def test_alignment_recovers_a_student_that_is_a_rotated_projection_of_the_teacher() -> None:
    """A student whose vectors are the teacher's top principal components, turned: the targets are the student's
    own vectors (cosine 1), and the kept variance is what the directions hold."""
    rng = np.random.default_rng(0)
    scales = np.r_[np.linspace(5, 2, 8), np.full(24, 0.01)]  # 8 strong directions in 32 dimensions
    teacher = (rng.standard_normal((400, 32)) * scales) @ _orthonormal(rng, 32, 32).T
    mean = teacher.mean(0)
    _, _, vt = np.linalg.svd(teacher - mean, full_matrices=False)
    turned = (teacher - mean) @ vt[:8].T @ _orthonormal(rng, 8, 8)
    student = turned / np.linalg.norm(turned, axis=1, keepdims=True)
    alignment = align(teacher, student)
    assert alignment.directions.shape == (32, 8) and alignment.rotation.shape == (8, 8)
    assert alignment.variance_kept > 0.99
    assert alignment.agreement_before == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(alignment(teacher), student, atol=1e-5)
    # an unrelated student: the rotation is the best one, not a perfect one
    other = rng.standard_normal((400, 8))
    assert align(teacher, other / np.linalg.norm(other, axis=1, keepdims=True)).agreement_before < 0.5


def test_alignment_keeps_the_projected_teachers_cosines() -> None:
    """Rotations keep cosines: the targets' cosines are those of the teacher's unit PCA projections."""
    rng = np.random.default_rng(1)
    teacher, student = rng.standard_normal((300, 24)), rng.standard_normal((300, 6))
    alignment = align(teacher, student)
    projected = (teacher - alignment.mean) @ alignment.directions
    projected /= np.linalg.norm(projected, axis=1, keepdims=True)
    targets = alignment(teacher)
    np.testing.assert_allclose(targets @ targets.T, projected @ projected.T, atol=1e-5)
    assert np.allclose(np.linalg.norm(targets, axis=1), 1.0, atol=1e-5)


def test_a_mixed_target_lies_between_the_student_and_the_teacher() -> None:
    rng = np.random.default_rng(3)
    teacher, student = rng.standard_normal((300, 24)), rng.standard_normal((300, 6))
    alignment = align(teacher, student)
    unit = student / np.linalg.norm(student, axis=1, keepdims=True)
    full, none_ = alignment(teacher), alignment(teacher, student, mix=1e-9)
    np.testing.assert_allclose(none_, unit, atol=1e-6)
    cosines = [float((alignment(teacher, student, mix=m) * unit).sum(1).mean()) for m in (0.2, 0.5, 0.8)]
    assert 1 > cosines[0] > cosines[1] > cosines[2] > float((full * unit).sum(1).mean())
    with pytest.raises(InputError, match="needs the student's vector"):
        alignment(teacher, None, mix=0.5)


def test_a_teacher_with_fewer_dimensions_than_the_student_maps_into_part_of_its_space() -> None:
    rng = np.random.default_rng(2)
    teacher, student = rng.standard_normal((200, 4)), rng.standard_normal((200, 10))
    alignment = align(teacher, student)
    assert alignment.directions.shape == (4, 4) and alignment.rotation.shape == (4, 10)
    np.testing.assert_allclose(alignment.rotation @ alignment.rotation.T, np.eye(4), atol=1e-6)
    with pytest.raises(InputError, match="teacher vectors but"):
        align(teacher, student[:5])


def _lists() -> list[Query]:
    return [Query(text=f"what is {w}", id=f"q{i}", candidates=tuple(
        Candidate(id=f"p{i}-{j}", text=f"{w} is a kind of {x}") for j, x in enumerate(("tree", "fish", "tree"))))
        for i, w in enumerate(("oak", "cod", "elm"))]


def test_training_texts_are_distinct_and_a_dev_split_leaves_out_the_training_ones() -> None:
    lists = _lists()
    train = TrainingTexts.of(lists[:2])
    assert train.queries == ["what is oak", "what is cod"]
    assert train.passages == ["oak is a kind of tree", "oak is a kind of fish", "cod is a kind of tree",
                              "cod is a kind of fish"]  # the repeated passage text once
    dev = TrainingTexts.of([lists[2], lists[0]], exclude=train)
    assert dev.queries == ["what is elm"] and len(dev) == 3


def test_teacher_vectors_are_cached_and_a_score_only_teacher_is_refused(tmp_path: Path) -> None:
    texts = TrainingTexts.of(_lists())
    cache = tmp_path / "vectors.npz"
    first = teacher_vectors("embedding", texts, cache)  # the embedded all-MiniLM-L6-v2, default backend
    assert first.queries.shape == (3, 384) and first.passages.shape == (6, 384)
    assert first.encoded == 9 and first.cache_hits == 0
    np.testing.assert_allclose(np.linalg.norm(first.passages, axis=1), 1.0, atol=1e-5)
    again = teacher_vectors("embedding", texts, cache)
    assert again.encoded == 0 and again.cache_hits == 9
    np.testing.assert_array_equal(again.passages, first.passages)
    # a query and a passage with the same text are two entries (a query prefix may set them apart)
    same = TrainingTexts(queries=["oak is a kind of tree"], passages=["oak is a kind of tree"])
    assert teacher_vectors("embedding", same, cache).encoded == 1
    # a split with no passage of its own (all of them are training texts) keeps the teacher's width
    queries_only = teacher_vectors("embedding", TrainingTexts(queries=["what is oak"]), cache)
    assert queries_only.passages.shape == (0, 384) and queries_only.cache_hits == 1
    with pytest.raises(InputError, match="another teacher"):
        teacher_vectors({"name": "embedding", "query_prefix": "q: "}, texts, cache)
    with pytest.raises(InputError, match=r"embedding-mse.*gives scores, not vectors"):
        teacher_vectors("bm25", texts, tmp_path / "bm25.npz")


def test_a_tiny_student_learns_an_embedding_teachers_vectors(tmp_path: Path,
                                                            tmp_path_factory: pytest.TempPathFactory) -> None:
    """A random 32-wide student, the embedded MiniLM its teacher: its vectors move toward their targets (dev and
    training loss down, rank correlation with the teacher up); unlabeled training-only lists add texts and never
    enter the dev split; the teacher scores only the dev lists, and a second run sends it nothing."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("datasets")
    from surerank.train import train_model
    from test_train import config, lists, tiny

    base = tiny(tmp_path_factory.getbasetemp() / "tiny-bi", "bi-encoder")
    own, unlabeled = lists(12, 8), lists(20, 8)[12:]
    settings = {"teacher": "embedding", "loss": "embedding-mse", "batch_size": 16, "embedding_mix": 1.0,
                "teacher_cache": tmp_path / "teacher.json"}
    # random batches here (the second run below takes the default, length-grouped): with a dev split of a few
    # queries, which evaluation is kept is a draw, and this run's order is the one the figures below were set on
    card = train_model(config(tmp_path / "a", "bi-encoder", base, epochs=6, eval_steps=10, group_by_length=False,
                              **settings), own, train_only=unlabeled).card
    data, dev = card.data, card.dev
    assert data["train_only_queries"] == 8 and set(data["dev_ids"]) <= {q.id for q in own}
    assert card.schedule["batches"] == "random"
    targets = data["embedding_targets"]
    assert targets["directions"] == 32 and 0 < targets["variance_kept"] < 1
    assert targets["train_texts"] == data["train_pairs_per_epoch"] == data["train_examples"] > len(unlabeled) * 8
    assert data["dev_examples"] == targets["dev_texts"] > 0
    assert targets["teacher_vectors"]["train"]["encoded_this_run"] == targets["train_texts"]
    assert card.teacher["pairs_scored"] == data["dev_queries"] * 8  # the dev lists only
    fit = dev["training_fit"]  # its own training texts: the loss at least halves
    assert fit["loss_after"] < fit["loss_before"] / 2 and fit["verdict"] is None, fit
    # the kept evaluation: closer to the teacher's order on the held-out lists, and a lower dev loss
    kept = max(dev["evaluations"], key=lambda e: e["dev_spearman_teacher"])
    assert kept["dev_spearman_teacher"] > dev["base"]["spearman_teacher"] + 0.1, dev
    assert kept["loss"] < dev["before_training"]["loss"], (dev["before_training"], dev["evaluations"])
    assert dev["final"]["spearman_teacher"] == pytest.approx(kept["dev_spearman_teacher"], abs=1e-6)
    again = train_model(config(tmp_path / "b", "bi-encoder", base, max_steps=1, eval_steps=None, **settings), own,
                        train_only=unlabeled).card
    assert again.schedule["batches"] == "length-grouped" and again.steps == 1
    vectors = again.data["embedding_targets"]["teacher_vectors"]
    assert vectors["train"]["encoded_this_run"] == vectors["dev"]["encoded_this_run"] == 0
    assert vectors["train"]["cache_hits_this_run"] == targets["train_texts"]
    assert again.teacher["cache_hits_this_run"] == data["dev_queries"] * 8


def test_embedding_mse_refuses_what_it_cannot_learn_from(tmp_path: Path) -> None:
    from surerank.train import TrainConfig

    with pytest.raises(InputError, match=r"embedding-mse.*'order' does not apply"):
        TrainConfig(output=tmp_path / "m", teacher="embedding", loss="embedding-mse", teacher_labels="order")
    with pytest.raises(InputError, match="not a cross-encoder loss"):
        TrainConfig(output=tmp_path / "m", student="cross-encoder", teacher="embedding", loss="embedding-mse")
    with pytest.raises(InputError, match=r"group_by_length: only loss embedding-mse.*loss is kl"):
        TrainConfig(output=tmp_path / "m", teacher="embedding", loss="kl", group_by_length=False)
    assert TrainConfig(output=tmp_path / "m", teacher="embedding", loss="kl").schedule()["batches"] == "random"


def test_length_grouped_batches_hold_every_text_once_and_texts_of_about_one_length() -> None:
    """Each epoch's batches cover every text exactly once; a batch's lengths spread far less than a random
    batch's (short queries are not padded to a passage's length); one seed, one order."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("sentence_transformers")
    from datasets import Dataset

    from surerank.train.hooks import length_grouped_batches

    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(10, 60, 600), rng.integers(200, 900, 400)])  # queries, passages
    texts = ["x" * int(n) for n in rng.permutation(lengths)]
    data = Dataset.from_dict({"text": texts, "label": [[0.0]] * len(texts)})

    def batches(seed: int) -> list[list[int]]:
        return list(length_grouped_batches(data, batch_size=16, drop_last=False,
                                           generator=torch.Generator().manual_seed(seed)))

    grouped = batches(0)
    assert sorted(i for batch in grouped for i in batch) == list(range(len(texts)))
    assert grouped == batches(0) and grouped != batches(1)

    def padding(rows: list[list[int]]) -> int:  # characters of padding to each batch's longest text
        return sum(max(len(texts[i]) for i in b) * len(b) - sum(len(texts[i]) for i in b) for b in rows)

    order = rng.permutation(len(texts)).tolist()
    random_batches = [order[i:i + 16] for i in range(0, len(order), 16)]
    assert padding(grouped) < padding(random_batches) / 5


def test_a_teacher_killed_mid_run_loses_at_most_a_tenth_of_its_vectors(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The vector cache is not rewritten after every group (that costs the square of its size), but often enough
    that a kill loses at most :data:`SAVE_SHARE` of what was embedded; the rerun sends only the rest."""
    import surerank.train.embedding_targets as targets

    monkeypatch.setattr(targets, "ENCODE_GROUP", 1)
    real, sent = targets.make_ranker, []

    def killed_after(limit: int):  # the real teacher, whose process dies on its (limit + 1)-th call
        def make(ref, role):
            ranker = real(ref, role)
            encode = ranker.encode

            def dying(texts, **kw):
                if len(sent) == limit:
                    raise KeyboardInterrupt
                sent.extend(texts)
                return encode(texts, **kw)
            ranker.encode = dying
            return ranker
        return make

    texts = TrainingTexts(passages=[f"passage number {i} about oak trees" for i in range(40)])
    cache = tmp_path / "vectors.npz"
    monkeypatch.setattr(targets, "make_ranker", killed_after(35))
    with pytest.raises(KeyboardInterrupt):
        teacher_vectors("embedding", texts, cache)
    with np.load(cache) as saved:
        kept = len(saved["keys"])
    assert 35 * (1 - targets.SAVE_SHARE) <= kept < 35
    monkeypatch.setattr(targets, "make_ranker", real)
    rerun = teacher_vectors("embedding", texts, cache)
    assert rerun.cache_hits == kept and rerun.encoded == 40 - kept
