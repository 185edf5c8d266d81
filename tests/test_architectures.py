"""Parity of every supported architecture with the transformers (torch) forward pass.

Each case is a tiny random-weight model built at test time (``tests/arch_fixtures.py``: 2 layers, every
tensor perturbed, a real tokenizer), ranked by surerank on ~20 DL19 pairs with each backend, and compared
with transformers' own forward pass on the same pairs: max |Δ| <= 1e-3 on logits (cross-encoders),
<= 1e-4 on cosine (bi-encoders), and the same ranking.  The bi-encoder cases also check that the model's
own configuration (pooling, max_seq_length, in old and new sentence-transformers formats) is what surerank
reads: the reference pools as the case *declares*, never as surerank reads it.

To add an architecture: a :class:`arch_fixtures.Family` in ``FAMILIES`` and ``Case`` rows in :data:`CASES`.
With ``SURERANK_PARITY_JSON=/path.json`` the measured figures are written there;
``python benchmarks/models_table.py /path.json`` turns them into the table of ``docs/models.md``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import surerank
from arch_fixtures import build_model, write_sentence_transformers_files
from engine_fixtures import dl19_slice

LOGIT_TOL = 1e-3
COSINE_TOL = 1e-4


@dataclass(frozen=True)
class Case:
    """One architecture and configuration to check; ``id`` names it in test ids and the docs table."""

    id: str
    model_type: str  # a key of arch_fixtures.FAMILIES
    kind: str  # "cross-encoder" | "embedding"
    pooling: str = "mean"  # embedding: the pooling the model declares (and the reference applies)
    st_format: str | None = None  # embedding: None (bare transformers directory), "old" or "new"
    max_seq_length: int | None = None  # embedding: the max_seq_length the model declares
    dtype: str = "float32"  # the dtype of the saved weights
    backends: tuple[str, ...] = ("onnx", "torch")


CASES: list[Case] = [
    Case("bert-ce", "bert", "cross-encoder"),
    Case("roberta-ce", "roberta", "cross-encoder"),
    Case("xlmr-ce", "xlm-roberta", "cross-encoder"),
    Case("bert-mean-st-old", "bert", "embedding", pooling="mean", st_format="old", max_seq_length=128),
    Case("bert-cls-st-old", "bert", "embedding", pooling="cls", st_format="old", max_seq_length=96),
    Case("bert-mean-st-new", "bert", "embedding", pooling="mean", st_format="new", max_seq_length=96),
    Case("bert-cls-st-new", "bert", "embedding", pooling="cls", st_format="new", max_seq_length=128),
    Case("xlmr-mean-st-new", "xlm-roberta", "embedding", pooling="mean", st_format="new", max_seq_length=128),
    Case("roberta-cls-st-old", "roberta", "embedding", pooling="cls", st_format="old", max_seq_length=128),
    Case("bert-mean-plain", "bert", "embedding"),  # no sentence-transformers files: mean, tokenizer's limit
    Case("bert-max-st-new", "bert", "embedding", pooling="max", st_format="new", max_seq_length=128),
    Case("bert-weightedmean-st-old", "bert", "embedding", pooling="weightedmean", st_format="old",
         max_seq_length=128),
    Case("roberta-lasttoken-st-new", "roberta", "embedding", pooling="lasttoken", st_format="new",
         max_seq_length=128),
    Case("xlmr-sqrtlen-st-old", "xlm-roberta", "embedding", pooling="mean_sqrt_len_tokens", st_format="old",
         max_seq_length=128),
    # half-precision checkpoints: cast to fp32 when the graph is built (bf16 built an invalid graph before)
    Case("bert-ce-bf16", "bert", "cross-encoder", dtype="bfloat16", backends=("onnx",)),
    Case("xlmr-mean-fp16", "xlm-roberta", "embedding", st_format="new", max_seq_length=128, dtype="float16",
         backends=("onnx",)),
    # exported through torch.onnx on the default (ONNX) backend: surerank.engine.onnx.export
    Case("electra-ce", "electra", "cross-encoder"),
    Case("deberta-v2-ce", "deberta-v2", "cross-encoder"),
    Case("modernbert-ce", "modernbert", "cross-encoder"),
    Case("gte-ce", "gte", "cross-encoder"),
    Case("mpnet-mean-st-old", "mpnet", "embedding", pooling="mean", st_format="old", max_seq_length=128),
    Case("distilbert-ce", "distilbert", "cross-encoder"),
    Case("distilbert-cls-st-old", "distilbert", "embedding", pooling="cls", st_format="old", max_seq_length=128),
    Case("modernbert-mean-st-new", "modernbert", "embedding", pooling="mean", st_format="new", max_seq_length=128),
]

PARAMS = [pytest.param(case, backend, id=f"{case.id}-{backend}") for case in CASES for backend in case.backends]

#: figures measured by this module's tests, written to $SURERANK_PARITY_JSON at the end
FIGURES: list[dict[str, Any]] = []


@pytest.fixture(scope="module", autouse=True)
def _write_figures():
    yield
    path = os.environ.get("SURERANK_PARITY_JSON")
    if path and FIGURES:
        Path(path).write_text(json.dumps(FIGURES, indent=1))


@pytest.fixture(scope="module")
def pairs():
    queries, _ = dl19_slice(2, 10)
    return queries


@pytest.fixture(scope="module")
def references():
    """Reference scores per (case, max_length), computed once and shared by the backends."""
    cache: dict[tuple[Case, int], list[np.ndarray]] = {}

    def get(case: Case, model_dir: Path, queries: list, max_length: int) -> list[np.ndarray]:
        if (case, max_length) not in cache:
            cache[case, max_length] = (
                reference_logits(model_dir, queries, max_length) if case.kind == "cross-encoder"
                else reference_cosines(model_dir, queries, max_length, case.pooling))
        return cache[case, max_length]

    return get


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    built: dict[Case, Path] = {}

    def get(case: Case) -> Path:
        if case not in built:
            target = tmp_path_factory.mktemp(case.id)
            kind = "cross-encoder" if case.kind == "cross-encoder" else "encoder"
            max_length = case.max_seq_length or 512
            build_model(target, case.model_type, kind, dtype=case.dtype, max_length=max_length)
            if case.st_format:
                config = json.loads((target / "config.json").read_text())
                hidden = config.get("hidden_size", config.get("dim"))  # DistilBERT: "dim"
                write_sentence_transformers_files(target, case.st_format, case.pooling, hidden, case.max_seq_length)
            built[case] = target
        return built[case]

    return get


# -- references: transformers' own forward pass --------------------------------------------------------
def pool(hidden: Any, mask: Any, mode: str) -> Any:
    """sentence-transformers' pooling of token states (right padding), written out here as the reference."""
    import torch

    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "mean":
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    if mode == "mean_sqrt_len_tokens":
        return (hidden * m).sum(1) / torch.sqrt(m.sum(1).clamp(min=1e-9))
    if mode == "max":
        return hidden.masked_fill(m == 0, float("-inf")).max(1).values
    if mode == "weightedmean":
        w = m * torch.arange(1, hidden.shape[1] + 1, dtype=hidden.dtype).view(1, -1, 1)
        return (hidden * w).sum(1) / w.sum(1).clamp(min=1e-9)
    if mode == "lasttoken":
        last = mask.sum(1) - 1
        return hidden[torch.arange(hidden.shape[0]), last]
    raise ValueError(mode)


def reference_logits(model_dir: Path, queries: list, max_length: int) -> list[np.ndarray]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    out = []
    with torch.inference_mode():
        for q in queries:
            docs = [c.text for c in q.candidates]
            enc = tok([q.text] * len(docs), docs, truncation="only_second", max_length=max_length, padding=True,
                      return_tensors="pt")
            out.append(model(**enc).logits[:, -1].double().numpy())
    return out


def reference_cosines(model_dir: Path, queries: list, max_length: int, pooling: str) -> list[np.ndarray]:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    out = []
    with torch.inference_mode():
        for q in queries:
            texts = [q.text] + [c.text for c in q.candidates]
            enc = tok(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
            vec = pool(model(**enc).last_hidden_state, enc["attention_mask"], pooling).double()
            vec = vec / vec.norm(dim=1, keepdim=True)
            out.append((vec[1:] @ vec[0]).numpy())
    return out


def by_index(ranked) -> np.ndarray:
    return np.array([i.score for i in sorted(ranked.items, key=lambda i: i.index)])


def same_order(reference: np.ndarray, ours: np.ndarray) -> bool:
    """Every pair the reference orders (by more than float noise) is ordered the same way by ours."""
    gap = reference[:, None] - reference[None, :]
    return bool(np.all((ours[:, None] - ours[None, :])[gap > 1e-6] > 0))


def record(case: Case, backend: str, precision: str, metric: str, max_diff: float, rank_ok: bool) -> None:
    FIGURES.append({**asdict(case), "backend": backend, "precision": precision, "metric": metric,
                    "max_abs_diff": max_diff, "same_ranking": rank_ok})


# -- the parity test --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("case", "backend"), PARAMS)
def test_parity_with_transformers(case: Case, backend: str, model_dirs, references, pairs):
    model_dir = model_dirs(case)
    if case.kind == "cross-encoder":
        # fp32 named: the default precision ("auto") may pick int8-fast, whose drift is not parity
        ranker = surerank.Reranker("cross-encoder", model=str(model_dir), backend=backend, precision="fp32")
        lists = ranker.rank_many(pairs)
        reference = references(case, model_dir, pairs, ranker.engine.max_length)
        metric, tol = "logit", LOGIT_TOL
    else:
        ranker = surerank.Reranker("embedding", model=str(model_dir), backend=backend, precision="fp32")
        desc = ranker.describe()
        assert desc["pooling"] == case.pooling  # read from the model's files, not guessed
        if case.max_seq_length is not None:
            assert desc["max_length"] == case.max_seq_length
        lists = ranker.rank_many(pairs)
        reference = references(case, model_dir, pairs, ranker.engine.max_length)
        metric, tol = "cosine", COSINE_TOL
    diffs, orders = [], []
    for ranked, ref in zip(lists, reference):
        # a meaningful check: the scores themselves differ by far more than the tolerance
        assert np.std(ref) > 20 * tol, f"{case.id}: degenerate fixture, reference scores sd {np.std(ref):.1e}"
        assert ranked.info["backend"] == backend
        ours = by_index(ranked)
        diffs.append(float(np.max(np.abs(ours - ref))))
        orders.append(same_order(ref, ours))
    record(case, backend, "fp32", metric, max(diffs), all(orders))
    assert max(diffs) <= tol, f"{case.id} on {backend}: max |Δ| {max(diffs):.2e} > {tol}"
    assert all(orders), f"{case.id} on {backend}: ranking differs from transformers'"


# -- the fixtures are what sentence-transformers itself reads --------------------------------------------
ST_CASES = [c for c in CASES if c.kind == "embedding" and c.st_format and c.dtype == "float32"]


@pytest.mark.parametrize("case", ST_CASES, ids=[c.id for c in ST_CASES])
def test_sentence_transformers_reads_the_fixtures_as_declared(case: Case, model_dirs, references, pairs):
    """sentence-transformers (the reference reader of these files) finds the declared pooling and
    max_seq_length in each fixture and scores as the transformers reference does."""
    pytest.importorskip("sentence_transformers")
    import torch
    from sentence_transformers import SentenceTransformer

    model_dir = model_dirs(case)
    st = SentenceTransformer(str(model_dir), device="cpu", model_kwargs={"dtype": torch.float32})
    assert st.max_seq_length == case.max_seq_length
    assert st[1].pooling_mode == case.pooling
    for q, ref in zip(pairs, references(case, model_dir, pairs, case.max_seq_length)):
        vec = st.encode([q.text] + [c.text for c in q.candidates], normalize_embeddings=True,
                        convert_to_numpy=True)
        np.testing.assert_allclose(vec[1:] @ vec[0], ref, atol=1e-5)


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_do_lower_case_lowercases_as_sentence_transformers_does(tmp_path, backend, pairs):
    """sentence_bert_config.json ``do_lower_case: true`` on a cased tokenizer: sentence-transformers
    lowercases every input (prompts too) before tokenizing; surerank follows, on both backends."""
    pytest.importorskip("sentence_transformers")
    import torch
    from sentence_transformers import SentenceTransformer

    model_dir = build_model(tmp_path / "cased", "roberta", "encoder", max_length=128)
    hidden = json.loads((model_dir / "config.json").read_text())["hidden_size"]
    write_sentence_transformers_files(model_dir, "old", "mean", hidden, 128)
    sbert = model_dir / "sentence_bert_config.json"
    sbert.write_text(json.dumps({**json.loads(sbert.read_text()), "do_lower_case": True}))
    queries = [type(q)(text=q.text.title(), id=q.id, candidates=q.candidates) for q in pairs]  # capitals to lower

    st = SentenceTransformer(str(model_dir), device="cpu", model_kwargs={"dtype": torch.float32})
    ranker = surerank.Reranker("embedding", model=str(model_dir), backend=backend, precision="fp32")
    assert ranker.describe()["lowercase"] is True
    assert ranker.describe()["sources"]["lowercase"] == "sentence_bert_config.json do_lower_case"
    cased = reference_cosines(model_dir, queries, 128, "mean")  # transformers on the text as given
    for q, ranked, ref_cased in zip(queries, ranker.rank_many(queries), cased):
        vec = st.encode([q.text] + [c.text for c in q.candidates], normalize_embeddings=True, convert_to_numpy=True)
        reference = vec[1:] @ vec[0]
        assert np.abs(reference - ref_cased).max() > 100 * COSINE_TOL  # lowercasing changes these scores
        assert np.abs(by_index(ranked) - reference).max() <= COSINE_TOL


# -- refusals ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("model_type", "backend", "missing"), [
    ("bert", "onnx", "classifier.weight"), ("bert", "torch", "classifier.weight"),
    ("xlm-roberta", "onnx", "classifier.dense.weight"), ("xlm-roberta", "torch", "classifier.dense.weight"),
    ("distilbert", "onnx", "pre_classifier.weight"), ("distilbert", "torch", "pre_classifier.weight"),
    ("modernbert", "onnx", "classifier.weight"), ("electra", "onnx", "classifier.dense.weight"),
])
def test_cross_encoder_refuses_a_checkpoint_without_a_head(tmp_path, model_type, backend, missing):
    """A bare encoder (no trained classification head) given to the cross-encoder: transformers would
    score with a randomly initialised head; surerank refuses, naming the missing tensors."""
    from surerank.errors import InputError

    model_dir = build_model(tmp_path / "bare", model_type, "encoder")
    ranker = surerank.Reranker("cross-encoder", model=str(model_dir), backend=backend)
    with pytest.raises(InputError, match=rf"no trained sequence-classification head: .*{missing}"):
        ranker.rank("what is lift", ["lift is an upward force", "a cat sat on a mat"])


@pytest.mark.parametrize("backend", ["onnx", "torch"])
@pytest.mark.parametrize("ranker_name", ["cross-encoder", "embedding"])
def test_custom_code_model_needs_trust_remote_code(tmp_path, monkeypatch, capsys, backend, ranker_name):
    """config.json's auto_map means the model is the repository's own Python code: refused unless
    trust_remote_code=True, with an error naming the option, and never a prompt on stdin."""
    import io

    from surerank.errors import InputError

    kind = "cross-encoder" if ranker_name == "cross-encoder" else "encoder"
    model_dir = build_model(tmp_path / "custom", "bert", kind)
    config = json.loads((model_dir / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_x.XConfig", "AutoModel": "modeling_x.XModel",
                          "AutoModelForSequenceClassification": "modeling_x.XForSequenceClassification"}
    (model_dir / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    ranker = surerank.Reranker(ranker_name, model=str(model_dir), backend=backend)
    with pytest.raises(InputError, match=r"auto_map.*trust_remote_code=True"):
        ranker.rank("what is lift", ["lift is an upward force", "a cat sat on a mat"])
    assert "[y/N]" not in capsys.readouterr().out
