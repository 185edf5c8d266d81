"""Service configuration: served models, network, limits, batching, keys.

Sources, later ones winning: built-in defaults < a config file (JSON or TOML) < ``SURERANK_*``
environment variables < command-line flags.  Plain dataclasses, no FastAPI import, so the CLI can
parse and check a configuration before any web dependency loads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from surerank.errors import InputError

DEFAULT_RANKER = "embedding"


@dataclass(frozen=True)
class ModelConfig:
    """One served model: the public name clients send, the ranker behind it and its options.

    ``calibration`` is the path of a trust-layer calibration artifact; when set, requests may ask for
    calibrated probabilities, keep flags and cutoffs.
    """

    name: str
    ranker: str
    options: Mapping[str, Any] = field(default_factory=dict)
    calibration: str | None = None


@dataclass(frozen=True)
class Limits:
    """What a client may send and hold.  A request over a size limit is answered 413 (422 for nesting)
    naming the limit, never cut silently; a connection over a connection limit is answered 431 / 408 /
    503 and closed (docs/serve.md has the table)."""

    # settings, not engine.runtime's RunStats counters: only the shape of a field list is shared (duplicates)
    max_documents: int = 1000
    max_query_chars: int = 8192
    max_document_chars: int = 100_000
    max_document_tokens: int = 8192
    max_total_chars: int = 2_000_000
    max_request_tokens: int = 500_000
    max_body_bytes: int = 16 * 1024 * 1024
    # checked while the body is read, before anything is built from it (surerank.serve.body)
    max_json_depth: int = 32
    max_json_values: int = 200_000
    # connection limits (surerank.serve.protocol; max_connections is uvicorn's limit_concurrency)
    max_header_bytes: int = 16 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    keepalive_timeout_s: float = 5.0
    max_connections: int = 1024


@dataclass(frozen=True)
class Batching:
    """Cross-request dynamic batching and load shedding.

    A batch closes when it holds ``max_batch_tokens`` (estimated) or ``max_batch_requests``, or when its
    oldest request has waited ``max_wait_ms``.  More than ``max_queue_requests`` waiting requests (or
    ``max_queue_tokens`` waiting tokens) and new ones are shed with 429 + Retry-After.
    """

    # the scheduler's settings, apart from Limits (what a client may send): alike only as field lists
    max_batch_tokens: int = 65_536
    max_batch_requests: int = 64
    max_wait_ms: float = 5.0
    max_queue_requests: int = 256
    max_queue_tokens: int = 4_000_000
    request_timeout_s: float = 120.0


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    models: tuple[ModelConfig, ...] = ()
    api_keys: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    batching: Batching = field(default_factory=Batching)
    graceful_timeout_s: float = 30.0
    # after SIGTERM, keep the listener open answering 503 + Retry-After for at least this long (and while
    # requests are in flight), so a load balancer sees the 503s and moves traffic before connections fail
    drain_s: float = 0.0
    log_level: str = "info"
    warmup: bool = True

    @property
    def default_model(self) -> str:
        return self.served_models()[0].name

    def served_models(self) -> tuple[ModelConfig, ...]:
        return self.models or (ModelConfig(name=DEFAULT_RANKER, ranker=DEFAULT_RANKER),)

    def public_dict(self) -> dict[str, Any]:
        """The configuration without secrets, for logs and /v1/models."""
        data = asdict(self)
        data["api_keys"] = f"{len(self.api_keys)} configured" if self.api_keys else "none"
        return data


# -- parsing helpers -------------------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """An option value from the command line or environment: JSON if it parses, else the string."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return text


def parse_model_spec(spec: str) -> ModelConfig:
    """``NAME=RANKER`` or ``RANKER`` (served under its own name)."""
    spec = spec.strip()
    if not spec:
        raise InputError("model: an empty model spec; use NAME=RANKER or RANKER")
    name, sep, ranker = spec.partition("=")
    if not sep:
        name, ranker = spec, spec
    name, ranker = name.strip(), ranker.strip()
    if not name or not ranker:
        raise InputError(f"model: {spec!r} is not NAME=RANKER")
    return ModelConfig(name=name, ranker=ranker)


def apply_model_option(models: list[ModelConfig], spec: str) -> list[ModelConfig]:
    """``NAME.KEY=VALUE`` sets a ranker option (``NAME.calibration=PATH`` the calibration artifact)."""
    target, sep, value = spec.partition("=")
    name, dot, key = target.partition(".")
    if not sep or not dot or not key:
        raise InputError(f"model option: {spec!r} is not NAME.KEY=VALUE")
    for position, model in enumerate(models):
        if model.name == name:
            if key == "calibration":
                models[position] = replace(model, calibration=value)
            else:
                models[position] = replace(model, options={**model.options, key: parse_value(value)})
            return models
    known = ", ".join(m.name for m in models) or "none"
    raise InputError(f"model option {spec!r}: no served model named {name!r} (served: {known})")


def _model_from_mapping(data: Mapping[str, Any], position: int) -> ModelConfig:
    if not isinstance(data, Mapping):
        raise InputError(f"config models[{position}]: expected a table with 'name' and 'ranker'")
    unknown = set(data) - {"name", "ranker", "options", "calibration"}
    if unknown:
        raise InputError(f"config models[{position}]: unknown keys {sorted(unknown)}")
    ranker = data.get("ranker") or data.get("name")
    name = data.get("name") or ranker
    if not isinstance(ranker, str) or not isinstance(name, str):
        raise InputError(f"config models[{position}]: 'name' and 'ranker' must be strings")
    options = data.get("options", {})
    if not isinstance(options, Mapping):
        raise InputError(f"config models[{position}].options: expected a table")
    calibration = data.get("calibration")
    return ModelConfig(name=name, ranker=ranker, options=dict(options),
                       calibration=str(calibration) if calibration else None)


def _dataclass_from(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise InputError(f"config {where}: expected a table")
    names = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(names)
    if unknown:
        raise InputError(f"config {where}: unknown keys {sorted(unknown)}; known: {sorted(names)}")
    values = {}
    for key, value in data.items():
        default = getattr(cls(), key)
        values[key] = _coerce(value, type(default), f"{where}.{key}")
    return cls(**values)


def _coerce(value: Any, kind: type, where: str) -> Any:
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if kind in (int, float):
            number = kind(value)
            if number < 0:
                raise ValueError(value)
            return number
        return kind(value)
    except (TypeError, ValueError):
        raise InputError(f"config {where}: {value!r} is not a valid {kind.__name__}") from None


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON or TOML file (by extension; TOML otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(text)
    except Exception as error:  # json.JSONDecodeError, tomllib.TOMLDecodeError
        raise InputError(f"config file {str(path)!r}: {error}") from None
    if not isinstance(data, dict):
        raise InputError(f"config file {str(path)!r}: expected a table at the top level")
    return data


def config_from_mapping(data: Mapping[str, Any], base: ServeConfig | None = None) -> ServeConfig:
    """Overlay a mapping (a parsed config file) on ``base``."""
    config = base or ServeConfig()
    known = {f.name for f in fields(ServeConfig)}
    unknown = set(data) - known
    if unknown:
        raise InputError(f"config: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    updates: dict[str, Any] = {}
    for key, value in data.items():
        if key == "models":
            if not isinstance(value, list):
                raise InputError("config models: expected a list of tables")
            updates["models"] = tuple(_model_from_mapping(m, i) for i, m in enumerate(value))
        elif key == "api_keys":
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(k, str) and k for k in value):
                raise InputError("config api_keys: expected a list of non-empty strings")
            updates["api_keys"] = tuple(value)
        elif key == "limits":
            updates["limits"] = _dataclass_from(Limits, {**asdict(config.limits), **value}, "limits")
        elif key == "batching":
            updates["batching"] = _dataclass_from(Batching, {**asdict(config.batching), **value}, "batching")
        else:
            updates[key] = _coerce(value, type(getattr(config, key)), key)
    return replace(config, **updates)


ENV_PREFIX = "SURERANK_"


def config_from_env(environ: Mapping[str, str], base: ServeConfig) -> ServeConfig:
    """``SURERANK_HOST``, ``SURERANK_PORT``, ``SURERANK_API_KEYS`` (comma-separated),
    ``SURERANK_MODELS`` (comma-separated NAME=RANKER), ``SURERANK_MAX_DOCUMENTS`` and every other limit or
    batching field upper-cased, ``SURERANK_LOG_LEVEL``, ``SURERANK_GRACEFUL_TIMEOUT_S``, ``SURERANK_DRAIN_S``."""
    data: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    batching: dict[str, Any] = {}
    limit_names = {f.name for f in fields(Limits)}
    batching_names = {f.name for f in fields(Batching)}
    for raw_key, value in environ.items():
        if not raw_key.startswith(ENV_PREFIX):
            continue
        key = raw_key[len(ENV_PREFIX):].lower()
        if key == "models":
            data["models"] = [asdict(parse_model_spec(s)) for s in value.split(",") if s.strip()]
        elif key == "api_keys":
            data["api_keys"] = [k.strip() for k in value.split(",") if k.strip()]
        elif key in limit_names:
            limits[key] = value
        elif key in batching_names:
            batching[key] = value
        elif key in ("host", "port", "log_level", "graceful_timeout_s", "drain_s", "warmup"):
            data[key] = value
    if limits:
        data["limits"] = limits
    if batching:
        data["batching"] = batching
    return config_from_mapping(data, base) if data else base


def validate(config: ServeConfig) -> ServeConfig:
    names = [m.name for m in config.served_models()]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"models: the names {duplicates} are served twice")
    if not 0 <= config.port < 65536:
        raise InputError(f"port: {config.port} is not a TCP port")
    for group in (config.limits, config.batching):
        for f in fields(group):
            if getattr(group, f.name) <= 0 and f.name != "max_wait_ms":
                raise InputError(f"{f.name}: must be positive, got {getattr(group, f.name)}")
    return config
