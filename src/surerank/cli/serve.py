"""``surerank serve``: the rerank HTTP service (Cohere / Jina / TEI wire formats)."""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import replace
from typing import Any

from surerank.errors import InputError

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
    parser.add_argument("--max-documents", type=int, help="documents per request (default 1000)")
    parser.add_argument("--max-document-tokens", type=int,
                        help="estimated tokens per document (default 8192)")
    parser.add_argument("--max-request-tokens", type=int, help="estimated tokens per request")
    parser.add_argument("--max-json-values", type=int,
                        help="JSON values (items, keys, scalars) in one body (default 200000)")
    parser.add_argument("--max-header-bytes", type=int, help="bytes of request line + headers (default 16384)")
    parser.add_argument("--header-timeout", type=float, dest="header_timeout_s",
                        help="seconds for a client to send its request head (default 10)")
    parser.add_argument("--body-timeout", type=float, dest="body_timeout_s",
                        help="seconds for a client to send its body after the head (default 60)")
    parser.add_argument("--keepalive-timeout", type=float, dest="keepalive_timeout_s",
                        help="seconds an idle kept-alive connection stays open (default 5)")
    parser.add_argument("--max-connections", type=int,
                        help="concurrent connections and requests before 503 (default 1024)")
    parser.add_argument("--max-batch-tokens", type=int, help="token budget of one model batch")
    parser.add_argument("--max-wait-ms", type=float, help="longest wait for a batch to fill (default 5)")
    parser.add_argument("--max-queue", type=int, dest="max_queue_requests",
                        help="waiting requests before shedding with 429 (default 256)")
    parser.add_argument("--request-timeout", type=float, dest="request_timeout_s",
                        help="seconds a request may wait for its answer before 503 (default 120)")
    parser.add_argument("--graceful-timeout", type=float, dest="graceful_timeout_s",
                        help="seconds to finish in-flight requests on shutdown (default 30)")
    parser.add_argument("--drain", type=float, dest="drain_s",
                        help="seconds to keep answering 503 + Retry-After after SIGTERM before closing the "
                             "listener (default 0: close once in-flight requests are answered)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the warm-up query at start")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument("--check", action="store_true", help="print the effective configuration and exit")
    parser.set_defaults(func=run)


def resolve_config(args: argparse.Namespace, environ: dict[str, str] | None = None) -> Any:
    """Defaults < config file < SURERANK_* environment < flags."""
    from surerank.serve.config import (
        ServeConfig,
        apply_model_option,
        config_from_env,
        config_from_mapping,
        parse_model_spec,
        read_config_file,
        validate,
    )

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
    limits = {k: getattr(args, k) for k in ("max_documents", "max_document_tokens", "max_request_tokens",
                                            "max_json_values", "max_header_bytes", "header_timeout_s",
                                            "body_timeout_s", "keepalive_timeout_s", "max_connections")
              if getattr(args, k) is not None}
    batching = {k: getattr(args, k) for k in ("max_batch_tokens", "max_wait_ms", "max_queue_requests",
                                              "request_timeout_s") if getattr(args, k) is not None}
    if limits:
        top["limits"] = limits
    if batching:
        top["batching"] = batching
    if top:
        config = config_from_mapping(top, config)
    return validate(config)


def run(args: argparse.Namespace) -> int:
    import importlib.util
    import json

    config = resolve_config(args)
    if args.check:
        print(json.dumps(config.public_dict(), indent=2, default=str))  # noqa: T201 - CLI output
        return 0
    # httptools: the HTTP parser the connection limits are built on (surerank.serve.protocol); ijson: the
    # body guard's tokenizer (surerank.serve.body); both come with surerank[serve]
    missing = [m for m in ("fastapi", "uvicorn", "prometheus_client", "httptools", "ijson")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(f"serve needs {', '.join(missing)}: pip install 'surerank[serve]'")
    from surerank.serve.app import build_rankers, build_trust_hooks
    from surerank.serve.app import run as serve

    # before binding the port, so a bad model or artifact fails fast with a clear message
    rankers = build_rankers(config)
    hooks = build_trust_hooks(config, rankers)
    logger.info("surerank serve on http://%s:%d (models: %s)", config.host, config.port,
                ", ".join(rankers))
    serve(config, rankers=rankers, trust_hooks=hooks, access_log=args.access_log)
    return 0

