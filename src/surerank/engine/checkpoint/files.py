"""Read a checkpoint directory: config, weights, tokenizer and the sentence-transformers files.

Every value the engine uses comes from a file (never guessed), and :class:`ModelFiles` says which; the
weights' fingerprint names the cached graphs built from them.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from surerank.engine.checkpoint.cache import cache_dir
from surerank.engine.checkpoint.families import (
    LEGACY_POOLING_KEYS,
    POOLINGS,
    POSITION_OFFSET_FAMILIES,
    SIMILARITIES,
)
from surerank.errors import InputError, MissingDependencyError
from surerank.storage import atomic_write_text

logger = logging.getLogger(__name__)

#: a tokenizer_config.json ``model_max_length`` at or above this is transformers' "no limit" placeholder
_NO_LIMIT = 1_000_000


@dataclass
class ModelFiles:
    """What the engine needs to know about a checkpoint directory, read from its files (never guessed).

    ``pooling``, ``normalize``, ``similarity`` and ``prompts`` come from the sentence-transformers files
    (``modules.json``, ``1_Pooling/config.json``, ``config_sentence_transformers.json``) when present;
    ``max_length`` from ``sentence_bert_config.json``'s ``max_seq_length``, else ``tokenizer_config.json``'s
    ``model_max_length``, capped by the position embeddings; ``sources`` says which file gave each value.
    """

    directory: Path
    config: dict[str, Any]
    pooling: str = "mean"  # one of POOLINGS
    max_length: int = 512
    weight_files: list[Path] = field(default_factory=list)
    normalize: bool = False  # a Normalize module follows the pooling (scores are cosines either way)
    similarity: str = "cosine"  # one of SIMILARITIES
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    include_prompt: bool = True  # False: prompt tokens are left out of the pooling (not supported)
    #: sentence_bert_config.json ``do_lower_case``: sentence-transformers lowercases the input before the
    #: tokenizer's own normalisation (whether the tokenizer is cased or not)
    lowercase: bool = False
    #: what sentence-transformers saved the model as (``config_sentence_transformers.json`` ``model_type``:
    #: SentenceTransformer, CrossEncoder, SparseEncoder, ...) and its Transformer's ``transformer_task``
    #: (sentence-transformers 6: feature-extraction, sequence-classification, ...); None where not written
    st_model_type: str | None = None
    transformer_task: str | None = None
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", "bert"))

    @property
    def num_labels(self) -> int:
        if "id2label" in self.config:
            return len(self.config["id2label"])
        return int(self.config.get("num_labels", 1))

    @property
    def position_offset(self) -> int | None:
        """Where positions start for families that count them from ``padding_idx + 1``; None otherwise."""
        if self.model_type in POSITION_OFFSET_FAMILIES:
            return int(self.config.get("pad_token_id", 1)) + 1
        return None

    @property
    def position_limit(self) -> int | None:
        """The most tokens the position embeddings take (None: the config has no such limit)."""
        positions = self.config.get("max_position_embeddings")
        if positions is None:
            return None
        return int(positions) - (self.position_offset or 0)

    @property
    def custom_code(self) -> dict[str, Any] | None:
        """config.json's ``auto_map``: the model's classes live in the repository's own Python code."""
        auto_map = self.config.get("auto_map")
        return dict(auto_map) if auto_map else None

    def fingerprint(self) -> str:
        """Identifies the weights so cached graphs are rebuilt when they change."""
        return weights_fingerprint(self.directory, self.weight_files)

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


def find_weight_files(directory: Path) -> list[Path]:
    """A checkpoint's weights: its ``*.safetensors`` files, else its ``pytorch_model*.bin`` files."""
    weights = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("pytorch_model*.bin"))
    if not weights:
        raise InputError(f"model: {directory} has no *.safetensors or pytorch_model*.bin weights")
    return weights


def weights_fingerprint(directory: Path, weight_files: list[Path]) -> str:
    """Identifies by content what a built graph depends on: the weights, ``config.json`` and the model's own
    code (``*.py``, for ``trust_remote_code``).  A copy of the model at another path (a new virtualenv, a
    re-download) reuses the cached graph instead of building it again; a change to any of these files builds
    a new one.  Each file is hashed once per (path, size, mtime) -- see :func:`_file_sha256`.
    """
    h = hashlib.sha256()
    for f in [*weight_files, directory / "config.json", *sorted(directory.glob("*.py"))]:
        if f.is_file():
            h.update(f"{f.name}:{_file_sha256(f)}\n".encode())
    return h.hexdigest()[:16]


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
            atomic_write_text(record, digest)
        except OSError as error:  # a read-only cache only costs a re-read next time
            logger.debug("could not record the sha256 of %s in %s: %s", path, record, error)
    return digest


def read_json(path: Path) -> Any:
    """A JSON file of the checkpoint, or an InputError naming it."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"model: {path} could not be read as JSON: {exc}") from exc


def _module_kind(entry: dict[str, Any]) -> str:
    """The class name of a modules.json entry (``sentence_transformers.models.Pooling`` -> ``Pooling``)."""
    return str(entry.get("type", "")).rsplit(".", 1)[-1]


def read_pooling(pool_cfg: dict[str, Any], path: Path) -> tuple[str, bool]:
    """The pooling mode and include_prompt of a ``1_Pooling/config.json``, in either format.

    sentence-transformers 6 writes ``"pooling_mode": "cls"`` (or a list: the modes' outputs concatenated);
    earlier versions write ``pooling_mode_*`` booleans.  One mode the engine runs is accepted; several
    (concatenated) or an unknown one are refused, naming them.
    """
    if "pooling_mode" in pool_cfg:
        raw = pool_cfg["pooling_mode"]
        modes = [raw] if isinstance(raw, str) else list(raw)
    else:
        modes = [mode for key, mode in LEGACY_POOLING_KEYS.items() if pool_cfg.get(key)]
        unknown = sorted(k for k, v in pool_cfg.items() if k.startswith("pooling_mode_") and v
                         and k not in LEGACY_POOLING_KEYS)
        if unknown:
            raise InputError(f"model: {path} sets {', '.join(unknown)}, a pooling surerank does not know")
        modes = modes or ["mean"]  # sentence-transformers' own default when no key is set
    if len(modes) != 1:
        raise InputError(f"model: {path} concatenates several poolings ({' + '.join(map(str, modes))}); "
                         f"surerank runs one of {', '.join(POOLINGS)}")
    if modes[0] not in POOLINGS:
        raise InputError(f"model: {path} asks for pooling {modes[0]!r}; surerank runs {', '.join(POOLINGS)}")
    return str(modes[0]), bool(pool_cfg.get("include_prompt", True))


def _transformer_dir(directory: Path) -> tuple[Path, list[dict[str, Any]]]:
    """The directory holding the transformer (old sentence-transformers models keep it in ``0_Transformer``)
    and the other modules listed in modules.json; refuses modules the engine does not run."""
    modules_path = directory / "modules.json"
    if not modules_path.is_file():
        return directory, []
    modules = read_json(modules_path)
    if not isinstance(modules, list) or not modules:
        raise InputError(f"model: {modules_path} lists no modules")
    first = modules[0]
    if _module_kind(first) != "Transformer":
        raise InputError(f"model: {modules_path} starts with a {_module_kind(first)} module; surerank runs "
                         "models whose first module is a sentence-transformers Transformer")
    rest = list(modules[1:])
    unsupported = [f"{_module_kind(m)} ({m.get('path') or m.get('name')})" for m in rest
                   if _module_kind(m) not in ("Pooling", "Normalize")]
    if unsupported:
        raise InputError(
            f"model: {modules_path} lists {', '.join(unsupported)}, which surerank's engine does not run (it runs "
            "Transformer, Pooling and Normalize); scores without them would not be the model's")
    if sum(_module_kind(m) == "Pooling" for m in rest) > 1:
        raise InputError(f"model: {modules_path} lists more than one Pooling module")
    sub = str(first.get("path") or "")
    return (directory / sub if sub else directory), rest


def read_model_files(directory: Path) -> ModelFiles:
    """Read a checkpoint directory: config, tokenizer, weights and the sentence-transformers files."""
    root = directory
    directory, st_modules = _transformer_dir(root)
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise InputError(f"model: {directory} has no config.json; is it a Hugging Face model directory?")
    config = read_json(cfg_path)
    if not (directory / "tokenizer.json").is_file():
        raise InputError(
            f"model: {directory} has no tokenizer.json (a fast tokenizer is required); save the model "
            "with a fast tokenizer (AutoTokenizer(..., use_fast=True).save_pretrained)"
        )
    files = ModelFiles(directory=directory, config=config, weight_files=find_weight_files(directory))
    sources = files.sources

    # pooling and normalisation: modules.json names the module folders; without it, 1_Pooling by convention
    pool_dirs = [root / str(m.get("path", "")) for m in st_modules if _module_kind(m) == "Pooling"]
    if not st_modules and (root / "1_Pooling" / "config.json").is_file():
        pool_dirs = [root / "1_Pooling"]
    if pool_dirs:
        pool_path = pool_dirs[0] / "config.json"
        files.pooling, files.include_prompt = read_pooling(read_json(pool_path), pool_path)
        sources["pooling"] = str(pool_path.relative_to(root))
    else:
        sources["pooling"] = "default (no sentence-transformers pooling config)"
    files.normalize = any(_module_kind(m) == "Normalize" for m in st_modules)

    st_cfg_path = root / "config_sentence_transformers.json"
    if st_cfg_path.is_file():
        st_cfg = read_json(st_cfg_path)
        prompts = st_cfg.get("prompts") or {}
        if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
            raise InputError(f"model: {st_cfg_path} 'prompts' must map names to strings")
        files.prompts = dict(prompts)
        files.default_prompt_name = st_cfg.get("default_prompt_name") or None
        if files.default_prompt_name is not None and files.default_prompt_name not in files.prompts:
            raise InputError(f"model: {st_cfg_path} default_prompt_name {files.default_prompt_name!r} is not "
                             f"one of its prompts ({', '.join(files.prompts) or 'none'})")
        similarity = st_cfg.get("similarity_fn_name") or "cosine"
        if similarity not in SIMILARITIES:
            raise InputError(f"model: {st_cfg_path} similarity_fn_name {similarity!r} is not computed by "
                             f"surerank (it computes {', '.join(SIMILARITIES)})")
        files.similarity = str(similarity)
        sources["prompts"] = sources["similarity"] = st_cfg_path.name
        files.st_model_type = st_cfg.get("model_type") or None

    files.max_length, sources["max_length"] = _max_length(files, root)
    lowercase, path = _sentence_bert_value(files, root, "do_lower_case")
    if lowercase is not None and not isinstance(lowercase, bool):
        raise InputError(f"model: {path} do_lower_case must be true or false, got {lowercase!r}")
    files.lowercase = bool(lowercase)
    sources["lowercase"] = f"{path.relative_to(root)} do_lower_case" if path else "default (no do_lower_case)"
    task, _ = _sentence_bert_value(files, root, "transformer_task")
    files.transformer_task = str(task) if task else None
    return files


def _sentence_bert_value(files: ModelFiles, root: Path, key: str) -> tuple[Any, Path | None]:
    """``key`` of sentence_bert_config.json (beside the model, else in its Transformer folder), and the file."""
    for path in (root / "sentence_bert_config.json", files.directory / "sentence_bert_config.json"):
        if path.is_file():
            value = read_json(path).get(key)
            if value is not None:
                return value, path
    return None, None


def _max_length(files: ModelFiles, root: Path) -> tuple[int, str]:
    """The declared input limit (sentence_bert_config.json, else tokenizer_config.json), capped by the
    position embeddings; and which file it came from."""
    limit = files.position_limit
    declared: int | None = None
    source = ""
    value, path = _sentence_bert_value(files, root, "max_seq_length")
    if path is not None:
        declared, source = int(value), f"{path.relative_to(root)} max_seq_length"
    if declared is None:
        tok_cfg = files.directory / "tokenizer_config.json"
        if tok_cfg.is_file():
            value = read_json(tok_cfg).get("model_max_length")
            if isinstance(value, (int, float)) and 0 < value < _NO_LIMIT:
                declared, source = int(value), "tokenizer_config.json model_max_length"
    if declared is not None and declared < 1:
        raise InputError(f"model: {source} is {declared}; it must be positive")
    if limit is None:
        if declared is None:
            return 512, "default (no max_seq_length, model_max_length or max_position_embeddings)"
        return declared, source
    if declared is None:
        return limit, "config.json max_position_embeddings"
    if declared > limit:
        logger.info("model: %s is %d but the position embeddings take %d tokens; using %d",
                    source, declared, limit, limit)
        return limit, f"config.json max_position_embeddings (below {source} {declared})"
    return declared, source


def load_weights(files: ModelFiles) -> dict[str, Any]:
    """All tensors, floating ones as float32 numpy arrays; ``.bin`` checkpoints need torch to unpickle.

    bf16 / fp16 safetensors are read without torch and cast to float32 (exact): ``ml_dtypes`` (a
    dependency of ``onnx``) gives numpy a bfloat16 dtype, whose arrays numpy does not count as floating
    (``dtype.kind`` is ``"V"``), so the cast is decided by name, not by kind.
    """
    with contextlib.suppress(ImportError):  # registers bfloat16 / float8 with numpy (onnx depends on it)
        import ml_dtypes  # noqa: F401
    tensors: dict[str, Any] = {}
    cast: set[str] = set()
    for f in files.weight_files:
        if f.suffix == ".safetensors":
            from safetensors.numpy import load_file

            try:
                loaded = load_file(str(f))
            except (TypeError, ValueError):  # a dtype numpy cannot hold even with ml_dtypes: go through torch
                loaded = _load_with_torch(f, safetensors=True)
        else:
            loaded = _load_with_torch(f, safetensors=False)
        for k, v in loaded.items():
            v = np.asarray(v)
            if _is_float(v.dtype) and v.dtype != np.float32:
                cast.add(v.dtype.name)
                v = v.astype(np.float32)
            tensors[k] = v
    if cast:
        logger.info("model %s: %s weights cast to float32", files.directory.name, ", ".join(sorted(cast)))
    return tensors


def _is_float(dtype: Any) -> bool:
    return dtype.kind == "f" or dtype.name in ("bfloat16", "float8_e4m3fn", "float8_e5m2")


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
