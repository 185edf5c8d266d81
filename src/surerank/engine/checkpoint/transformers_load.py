"""The one place a checkpoint is handed to transformers: the remote-code refusal, the dtype keyword, the
attention fallback and the refusal of a checkpoint transformers had to complete with random tensors.

Used by the torch backend, the ONNX export (encoders and the T5 first step), the T5 reranker and the LLM
backend; transformers and torch are imported by the callers that need them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from surerank.engine.checkpoint.files import ModelFiles
from surerank.errors import IncompleteCheckpointError, InputError

#: the files whose ``auto_map`` means a model's classes are Python code in its repository
REMOTE_CODE_FILES = ("config.json", "tokenizer_config.json")


def repo_json(model: str, filename: str) -> dict[str, Any]:
    """A JSON file of a local model folder or of a hub repository already in the local cache ({} if absent)."""
    path: str | None = None
    if os.path.isdir(model):
        candidate = Path(model) / filename
        path = str(candidate) if candidate.is_file() else None
    else:
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(model, filename)
            path = found if isinstance(found, str) else None
        except Exception:  # no hub client, or not a repo id: from_pretrained reports it
            path = None
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def refuse_remote_code(model: str, trust_remote_code: bool, filenames: tuple[str, ...] = REMOTE_CODE_FILES) -> None:
    """Refuse a model whose ``filenames`` (config.json / tokenizer_config.json) have ``auto_map`` (its classes
    are Python code in the repository) unless ``trust_remote_code`` is True, naming the option.  transformers
    would otherwise ask ``[y/N]`` on stdin (twice, and fail in a service) or silently use a built-in class."""
    if not isinstance(trust_remote_code, bool):
        raise InputError(f"trust_remote_code: must be true or false, got {trust_remote_code!r}")
    if trust_remote_code:
        return
    for filename in filenames:
        auto_map = repo_json(model, filename).get("auto_map")
        if auto_map:
            entries = ", ".join(f"{k} -> {v}" for k, v in dict(auto_map).items()) if isinstance(auto_map, dict) \
                else str(auto_map)
            raise InputError(
                f"model: {model} runs its own Python code ({filename} auto_map: {entries}); surerank does not "
                "run a repository's code unless asked: read it, then pass trust_remote_code=True "
                "(-o trust_remote_code=true)")


def dtype_option(transformers: Any, torch: Any, dtype: str | None) -> dict[str, Any]:
    """``from_pretrained``'s dtype keyword (``dtype`` since transformers 5, ``torch_dtype`` before)."""
    if not dtype:
        return {}
    if not isinstance(getattr(torch, dtype, None), torch.dtype):
        raise InputError(f"dtype: {dtype!r} is not a torch dtype (float32, bfloat16, float16)")
    key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    return {key: getattr(torch, dtype)}


def load_complete(auto_class: Any, model: str, purpose: str, *, attention: str | None = None,
                  check: Callable[[dict[str, Any]], None] | None = None, **options: Any) -> Any:
    """``auto_class.from_pretrained(model, **options)``, refusing a checkpoint transformers had to complete with
    random tensors (a base model without its untied LM head, a T5 checkpoint missing decoder layers).

    ``attention``: the attention implementation to ask for, the model's default where its architecture has
    no such one.  ``check``: the refusal, given transformers' loading info (default: any missing tensor).
    """
    if attention:
        try:
            loaded, info = auto_class.from_pretrained(model, output_loading_info=True,
                                                      attn_implementation=attention, **options)
        except (ValueError, ImportError, TypeError):  # an architecture without that attention implementation
            loaded, info = auto_class.from_pretrained(model, output_loading_info=True, **options)
    else:
        loaded, info = auto_class.from_pretrained(model, output_loading_info=True, **options)
    if check is None:
        IncompleteCheckpointError.check(model, info.get("missing_keys") or [], f"lacks tensors {purpose} needs "
                                        f"({auto_class.__name__})")
    else:
        check(info)
    return loaded


def check_loaded(files: ModelFiles, head: str, info: dict[str, Any]) -> None:
    """Refuse a model transformers had to complete with randomly initialised tensors.

    A cross-encoder needs its classification head from the checkpoint; an encoder may lack only the
    BERT pooler, which embeddings do not use.
    """
    missing = list(info.get("missing_keys") or ())
    if head != "classifier":
        missing = [k for k in missing if not k.split(".", 1)[-1].startswith("pooler.")
                   and not k.startswith("pooler.")]
    architectures = files.config.get("architectures") or [files.model_type]
    IncompleteCheckpointError.check(
        f"{files.directory.name} ({', '.join(map(str, architectures))})", missing,
        "has no trained sequence-classification head" if head == "classifier" else "lacks tensors the encoder needs",
        "; the cross-encoder ranker needs a reranker checkpoint (a *ForSequenceClassification model trained for "
        "relevance), e.g. use this checkpoint with the embedding ranker instead" if head == "classifier" else "")


def load_encoder(files: ModelFiles, head: str, *, dtype: str, attention: str, trust_remote_code: bool) -> Any:
    """The transformers model of an encoder checkpoint: sequence classification for the ``classifier`` head,
    the bare encoder otherwise; in ``dtype`` with ``attention`` where the architecture has it, not in eval
    mode yet.  The torch backend and the ONNX export both load through here."""
    import torch
    import transformers

    refuse_remote_code(str(files.directory), trust_remote_code, ("config.json",))
    cls = transformers.AutoModelForSequenceClassification if head == "classifier" else transformers.AutoModel
    return load_complete(cls, str(files.directory), "the encoder", attention=attention,
                         check=lambda info: check_loaded(files, head, info), trust_remote_code=trust_remote_code,
                         **dtype_option(transformers, torch, dtype))
