"""Helpers for the engine / embedding / cross-encoder tests: data slices and a tiny local cross-encoder."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np

from surerank.engine.checkpoint.locate import default_model_dir
from surerank.eval.datasets import data_root, load_trec_dl
from surerank.types import Query


def dl19_slice(n_queries: int = 3, n_candidates: int = 20) -> tuple[list[Query], dict]:
    queries, qrels = load_trec_dl(19)
    out = [Query(text=q.text, candidates=q.candidates[:n_candidates], id=q.id) for q in queries[:n_queries]]
    return out, qrels


def cranfield_text(n_chars: int) -> str:
    """Real (aeronautics) prose to pad long documents with; it is unrelated to the test queries."""
    raw = (data_root() / "cranfield" / "cran.all.1400").read_text()
    parts = [p.split(".W", 1)[1].strip().replace("\n", " ") for p in raw.split("\n.I ")[1:] if ".W" in p]
    text = " ".join(parts)
    return text[:n_chars]


def build_tiny_cross_encoder(target: Path, layers: int = 2, seed: int = 0) -> Path:
    """A BertForSequenceClassification directory: the first ``layers`` MiniLM layers + a fresh 1-logit head.

    Its scores are meaningless; its mechanics (pairs, token types, pooler, head) are those of a real
    cross-encoder.  Built by hand from the safetensors weights, so it needs no torch.
    """
    from safetensors.numpy import load_file, save_file

    src = default_model_dir()
    target.mkdir(parents=True, exist_ok=True)
    tensors = load_file(str(src / "model.safetensors"))
    rng = np.random.default_rng(seed)
    keep = {}
    for name, value in tensors.items():
        if name.startswith("encoder.layer.") and int(name.split(".")[2]) >= layers:
            continue
        if name.endswith("position_ids"):
            continue
        keep["bert." + name] = np.ascontiguousarray(value)
    hidden = tensors["embeddings.word_embeddings.weight"].shape[1]
    keep["classifier.weight"] = (rng.standard_normal((1, hidden)) * 0.2).astype(np.float32)
    keep["classifier.bias"] = np.zeros((1,), np.float32)
    save_file(keep, str(target / "model.safetensors"))
    config = json.loads((src / "config.json").read_text())
    config.update({"architectures": ["BertForSequenceClassification"], "num_hidden_layers": layers,
                   "id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}})
    config.pop("_name_or_path", None)
    (target / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(src / name, target / name)
    (target / "tokenizer_config.json").write_text(json.dumps(
        {**json.loads((src / "tokenizer_config.json").read_text()), "model_max_length": 512}))
    return target


def has(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def pipelined_like_gpu(ranker, queries, group_pairs: int):
    """Rank ``queries`` through the GPU code path (groups tokenized on a helper thread while the previous
    group runs, batches padded on a background thread) with the CPU backend standing in for the device."""
    engine = ranker.engine
    saved = engine.on_gpu, ranker.pipeline_pairs
    engine.on_gpu, ranker.pipeline_pairs = True, group_pairs
    try:
        return ranker.rank_many(queries)
    finally:
        engine.on_gpu, ranker.pipeline_pairs = saved
