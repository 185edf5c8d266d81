"""``surerank serve``: the rerank HTTP service (Cohere / Jina / TEI wire formats)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
from dataclasses import replace
from typing import Any

from surerank.errors import InputError
from surerank.serve.config import (
    ServeConfig,
    apply_model_option,
    config_from_env,
    config_from_mapping,
    parse_model_spec,
    read_config_file,
    validate,
)

logger = logging.getLogger(__name__)

EPILOG = """examples:
  surerank serve                                   # the embedding ranker on 127.0.0.1:8080
  surerank serve --model rerank-v3.5=embedding --model lexical=bm25 --port 9000
  surerank serve --model minilm=embedding --option minilm.calibration=artifacts/minilm-dl20.json
  SURERANK_API_KEYS=secret1,secret2 surerank serve --host 0.0.0.0
  surerank serve --config serve.toml --check       # print the effective configuration and exit

every setting also reads SURERANK_<NAME> (SURERANK_PORT, SURERANK_MODELS=a=embedding,b=bm25,
SURERANK_MAX_DOCUMENTS, SURERANK_MAX_WAIT_MS, ...) and a config file (--config or SURERANK_CONFIG).
"""

# the flags that set a field of config.limits / config.batching: (flag, field, type, help), in --help order
LIMIT_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--max-documents", "max_documents", int, "documents per request (default 1000)"),
    ("--max-document-tokens", "max_document_tokens", int, "estimated tokens per document (default 8192)"),
    ("--max-request-tokens", "max_request_tokens", int, "estimated tokens per request"),
    ("--max-json-values", "max_json_values", int, "JSON values (items, keys, scalars) in one body (default 200000)"),
    ("--max-header-bytes", "max_header_bytes", int, "bytes of request line + headers (default 16384)"),
    ("--header-timeout", "header_timeout_s", float, "seconds for a client to send its request head (default 10)"),
    ("--body-timeout", "body_timeout_s", float, "seconds for a client to send its body after the head (default 60)"),
    ("--keepalive-timeout", "keepalive_timeout_s", float,
     "seconds an idle kept-alive connection stays open (default 5)"),
    ("--max-connections", "max_connections", int, "concurrent connections and requests before 503 (default 1024)"),
)
BATCHING_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--max-batch-tokens", "max_batch_tokens", int, "token budget of one model batch"),
    ("--max-wait-ms", "max_wait_ms", float, "longest wait for a batch to fill (default 5)"),
    ("--max-queue", "max_queue_requests", int, "waiting requests before shedding with 429 (default 256)"),
    ("--request-timeout", "request_timeout_s", float,
     "seconds a request may wait for its answer before 503 (default 120)"),
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve", help="run the rerank HTTP service", epilog=EPILOG,
        description="Serve rankers over HTTP in the Cohere v2 / Jina (/v1/rerank, /v2/rerank) and TEI "
                    "(/rerank) formats, with cross-request batching, limits, API keys and metrics.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="a JSON or TOML file (see docs/serve.md)")
    parser.add_argument("--model", action="append", default=None, metavar="NAME=RANKER",
                        help="a served model: NAME=RANKER or RANKER (repeatable; the first is the default)")
    parser.add_argument("--option", action="append", default=[], metavar="NAME.KEY=VALUE",
                        help="a ranker option (VALUE parsed as JSON when it can be), "
                             "or NAME.calibration=PATH")
    parser.add_argument("--host", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (default 8080)")
    parser.add_argument("--api-key", action="append", default=None, metavar="KEY",
                        help="require Authorization: Bearer KEY (repeatable; prefer SURERANK_API_KEYS)")
    for flag, name, kind, text in (*LIMIT_FLAGS, *BATCHING_FLAGS):
        parser.add_argument(flag, type=kind, dest=name, help=text)
    parser.add_argument("--graceful-timeout", type=float, dest="graceful_timeout_s",
                        help="seconds to finish in-flight requests on shutdown (default 30)")
    parser.add_argument("--drain", type=float, dest="drain_s",
                        help="seconds to keep answering 503 + Retry-After after SIGTERM before closing the "
                             "listener (default 0: close once in-flight requests are answered)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the warm-up query at start")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument("--check", action="store_true", help="print the effective configuration and exit")
    parser.set_defaults(func=run)


def _given(args: argparse.Namespace, flags: tuple[tuple[str, str, type, str], ...]) -> dict[str, Any]:
    """The fields of ``flags`` set on the command line."""
    return {name: getattr(args, name) for _, name, _, _ in flags if getattr(args, name) is not None}


def resolve_config(args: argparse.Namespace, environ: dict[str, str] | None = None) -> ServeConfig:
    """Defaults < config file < SURERANK_* environment < flags."""
    environ = dict(os.environ if environ is None else environ)
    config = ServeConfig()
    path = args.config or environ.get("SURERANK_CONFIG")
    if path:
        config = config_from_mapping(read_config_file(path), config)
    config = config_from_env(environ, config)
    if args.model:
        config = replace(config, models=tuple(parse_model_spec(s) for s in args.model))
    if args.option:
        models = list(config.served_models())
        for spec in args.option:
            models = apply_model_option(models, spec)
        config = replace(config, models=tuple(models))
    top: dict[str, Any] = {}
    for key in ("host", "port", "graceful_timeout_s", "drain_s"):
        if getattr(args, key) is not None:
            top[key] = getattr(args, key)
    if args.api_key:
        top["api_keys"] = list(args.api_key)
    if args.no_warmup:
        top["warmup"] = False
    if limits := _given(args, LIMIT_FLAGS):
        top["limits"] = limits
    if batching := _given(args, BATCHING_FLAGS):
        top["batching"] = batching
    if top:
        config = config_from_mapping(top, config)
    return validate(config)


def run(args: argparse.Namespace) -> int:
    """Check the web dependencies, build the models (before the port opens), then serve."""
    config = resolve_config(args)
    if args.check:
        sys.stdout.write(json.dumps(config.public_dict(), indent=2, default=str) + "\n")  # the command's answer
        return 0
    # httptools: the HTTP parser the connection limits are built on (surerank.serve.protocol); ijson: the
    # body guard's tokenizer (surerank.serve.body); both come with surerank[serve]
    missing = [m for m in ("fastapi", "uvicorn", "prometheus_client", "httptools", "ijson")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(f"serve needs {', '.join(missing)}: pip install 'surerank[serve]'")
    # the web stack (FastAPI, uvicorn) loads only to serve: `surerank --help` and --check stay light
    from surerank.serve.server import run as serve
    from surerank.serve.state import build_rankers, build_trust_hooks

    # before binding the port, so a bad model or artifact fails fast with a clear message
    rankers = build_rankers(config)
    hooks = build_trust_hooks(config, rankers)
    logger.info("surerank serve on http://%s:%d (models: %s)", config.host, config.port,
                ", ".join(rankers))
    serve(config, rankers=rankers, trust_hooks=hooks, access_log=args.access_log)
    return 0

