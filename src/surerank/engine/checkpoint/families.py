"""What the engine knows about model families: poolings, position offsets, activations, and which
checkpoints the hand-built ONNX graph covers (one check, used by the builder and by the graph chooser).

Also sentence-transformers' pooling in torch, shared by the torch backend and the ONNX export.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from surerank.errors import InputError

#: sentence-transformers pooling modes (``1_Pooling/config.json``) the engine runs
POOLINGS = ("mean", "cls", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
#: the legacy boolean keys of ``1_Pooling/config.json`` (sentence-transformers < 6), in its concatenation order
LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max", "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken",
}
#: similarity functions of ``config_sentence_transformers.json`` the embedding ranker computes
SIMILARITIES = ("cosine", "dot")
#: model types whose positions count from ``padding_idx + 1`` (transformers'
#: ``create_position_ids_from_input_ids``): ``max_position_embeddings`` minus that offset is the input limit
POSITION_OFFSET_FAMILIES = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "mpnet", "data2vec-text",
                            "roberta-prelayernorm", "xmod")
#: the families the hand-built graph covers with RoBERTa's embeddings and head (BERT is the other one)
ROBERTA_LIKE = ("roberta", "xlm-roberta", "camembert")
#: GELU variants (config ``hidden_act``) and the ORT kernel computing each with its bias: erf GELU is
#: BiasGelu; the tanh approximation (``gelu_new`` and its aliases) is FastGelu -- not interchangeable
#: (they differ by up to ~1e-3 per activation)
GELU_OPS = {"gelu": "BiasGelu", "gelu_python": "BiasGelu", "gelu_new": "FastGelu",
            "gelu_pytorch_tanh": "FastGelu", "gelu_fast": "FastGelu"}
#: the activations for which the hand-built graph is chosen over the torch export; the builder computes
#: every :data:`GELU_OPS` entry, but models with the others have always been exported (and cached so)
BUILDER_ACTIVATIONS = ("gelu", "gelu_new", "gelu_python")


def builder_refusal(config: Mapping[str, Any], name: str, activations: tuple[str, ...] = tuple(GELU_OPS)
                    ) -> str | None:
    """Why the hand-built ONNX graph cannot stand in for the checkpoint ``name`` with ``config`` (None: it can)."""
    model_type = str(config.get("model_type", "bert"))
    if config.get("auto_map"):
        return (f"model: {name} defines its own architecture in Python (config.json auto_map); the hand-built "
                "ONNX graph covers only the stock BERT/RoBERTa/XLM-R code, so it cannot stand in for it; use "
                "backend='torch' with trust_remote_code=True")
    if model_type not in ("bert", *ROBERTA_LIKE):
        return (f"model: model_type {model_type!r} is not supported by the ONNX builder (BERT, RoBERTa, "
                "XLM-RoBERTa); use backend='torch' for other architectures")
    if config.get("position_embedding_type", "absolute") != "absolute":
        return "model: only absolute position embeddings are supported by the ONNX builder"
    act = config.get("hidden_act", "gelu")
    if act not in activations:
        return f"model: activation {act!r} is not supported by the ONNX builder ({', '.join(activations)} are)"
    return None


def handled_by_builder(config: Mapping[str, Any]) -> bool:
    """Whether the hand-built graph (no torch) is the one made for a checkpoint with ``config``."""
    return builder_refusal(config, "", BUILDER_ACTIVATIONS) is None


def pool_tokens(hidden: Any, attention_mask: Any, mode: str) -> Any:
    """sentence-transformers' pooling of token states ``[batch, seq, hidden]`` (right padding) in torch."""
    torch = importlib.import_module("torch")
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).max(1).values
    if mode == "lasttoken":
        last = (attention_mask.long().sum(1) - 1).clamp(min=0)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if mode == "weightedmean":  # weights 1..n over the real tokens
        mask = mask * torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=hidden.dtype).view(1, -1, 1)
    elif mode not in ("mean", "mean_sqrt_len_tokens"):
        raise InputError(f"pooling: {mode!r} is unknown; choose from {', '.join(POOLINGS)}")
    summed = (hidden * mask).sum(1)
    count = mask.sum(1).clamp(min=1e-9)
    return summed / count.sqrt() if mode == "mean_sqrt_len_tokens" else summed / count
