"""Configuration precedence (defaults < file < SURERANK_* < flags), file formats, token estimates,
the lazy-import promise, and one real server on the embedded default model."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from serve_support import Server, server_env
from surerank.errors import InputError
from surerank.serve.config import ServeConfig
from surerank.serve.tokens import count_tokens, truncate_tokens


def parse(*argv: str) -> argparse.Namespace:
    from surerank.cli import serve

    parser = argparse.ArgumentParser()
    serve.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", *argv])


def resolve(*argv: str, env: dict[str, str] | None = None) -> ServeConfig:
    from surerank.cli.serve import resolve_config

    return resolve_config(parse(*argv), environ=env or {})


def test_precedence_file_env_flags(tmp_path):
    toml = tmp_path / "serve.toml"
    toml.write_text('port = 9000\nhost = "0.0.0.0"\napi_keys = ["from-file"]\n'
                    '[limits]\nmax_documents = 10\n[batching]\nmax_wait_ms = 7\n'
                    '[[models]]\nname = "fast"\nranker = "bm25"\noptions = {k1 = 1.2}\n')
    config = resolve("--config", str(toml))
    assert (config.port, config.host, config.api_keys) == (9000, "0.0.0.0", ("from-file",))
    assert config.limits.max_documents == 10 and config.batching.max_wait_ms == 7
    assert config.models[0].name == "fast" and config.models[0].options == {"k1": 1.2}
    env = {"SURERANK_PORT": "9100", "SURERANK_MAX_DOCUMENTS": "20", "SURERANK_API_KEYS": "a, b"}
    config = resolve("--config", str(toml), env=env)
    assert (config.port, config.limits.max_documents, config.api_keys) == (9100, 20, ("a", "b"))
    config = resolve("--config", str(toml), "--port", "9200", "--max-documents", "30",
                     "--model", "x=bm25", "--option", "x.k1=1.5", "--option", "x.stemmer=null", env=env)
    assert (config.port, config.limits.max_documents) == (9200, 30)
    assert config.models[0].options == {"k1": 1.5, "stemmer": None}
    assert config.limits.max_document_chars == ServeConfig().limits.max_document_chars  # untouched default


def test_drain_seconds_from_file_env_and_flag(tmp_path):
    toml = tmp_path / "serve.toml"
    toml.write_text("drain_s = 5\n")
    assert ServeConfig().drain_s == 0
    assert resolve("--config", str(toml)).drain_s == 5
    assert resolve("--config", str(toml), env={"SURERANK_DRAIN_S": "7.5"}).drain_s == 7.5
    assert resolve("--config", str(toml), "--drain", "2", env={"SURERANK_DRAIN_S": "7.5"}).drain_s == 2
    with pytest.raises(InputError, match="drain_s"):
        resolve("--drain", "-1")


def test_connection_and_body_limits_from_file_env_and_flags(tmp_path):
    toml = tmp_path / "serve.toml"
    toml.write_text("[limits]\nmax_header_bytes = 8192\nheader_timeout_s = 3\nmax_json_depth = 16\n")
    defaults = ServeConfig().limits
    assert (defaults.max_header_bytes, defaults.header_timeout_s, defaults.body_timeout_s,
            defaults.keepalive_timeout_s, defaults.max_connections) == (16384, 10.0, 60.0, 5.0, 1024)
    config = resolve("--config", str(toml), env={"SURERANK_BODY_TIMEOUT_S": "9", "SURERANK_MAX_JSON_VALUES": "500"})
    limits = config.limits
    assert (limits.max_header_bytes, limits.header_timeout_s, limits.max_json_depth) == (8192, 3.0, 16)
    assert (limits.body_timeout_s, limits.max_json_values) == (9.0, 500)
    limits = resolve("--config", str(toml), "--max-header-bytes", "4096", "--header-timeout", "1.5",
                     "--body-timeout", "4", "--keepalive-timeout", "2", "--max-connections", "64",
                     "--max-json-values", "1000").limits
    assert (limits.max_header_bytes, limits.header_timeout_s, limits.body_timeout_s, limits.keepalive_timeout_s,
            limits.max_connections, limits.max_json_values) == (4096, 1.5, 4.0, 2.0, 64, 1000)
    with pytest.raises(InputError, match="header_timeout_s"):
        resolve("--header-timeout", "0")


def test_json_config_and_errors_name_the_key(tmp_path):
    path = tmp_path / "serve.json"
    path.write_text(json.dumps({"models": [{"name": "a", "ranker": "bm25"}], "batching": {"max_queue_requests": 3}}))
    assert resolve("--config", str(path)).batching.max_queue_requests == 3
    path.write_text(json.dumps({"limits": {"max_documentz": 3}}))
    with pytest.raises(InputError, match="max_documentz"):
        resolve("--config", str(path))
    with pytest.raises(InputError, match="max_documents"):
        resolve(env={"SURERANK_MAX_DOCUMENTS": "many"})
    with pytest.raises(InputError, match="served twice"):
        resolve("--model", "a=bm25", "--model", "a=embedding")
    with pytest.raises(InputError, match="no served model named 'b'"):
        resolve("--model", "a=bm25", "--option", "b.k1=2")
    assert resolve().default_model == "embedding"


@given(st.text(max_size=200), st.integers(min_value=1, max_value=50), st.booleans())
def test_truncation_keeps_a_prefix_or_suffix_of_the_asked_length(text, limit, left):
    cut, total = truncate_tokens(text, limit, left=left)
    assert total == count_tokens(text)
    assert (text.endswith(cut) if left else text.startswith(cut))
    assert count_tokens(cut) == min(total, limit) or (not cut.strip() and total == 1)


def test_import_surerank_stays_light():
    code = ("import sys, surerank, surerank.serve, surerank.cli.serve; "
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'httpx', 'starlette') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], env=server_env(), capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_embedding_default_model_served(tmp_path):
    """The embedded default model behind the Cohere shape, answers equal to the in-process ranker."""
    pytest.importorskip("onnxruntime")
    import surerank

    query = "what is the boiling point of water"
    docs = ["Water boils at 100 degrees Celsius at sea level.", "The Eiffel Tower is in Paris.",
            "At high altitude water boils at a lower temperature.", "Cats sleep most of the day."]
    expected = surerank.Reranker("embedding").rank(query, docs)
    server = Server("--max-wait-ms", "2")  # no --model: the default ranker, served as 'embedding'
    try:
        response = httpx.post(f"{server.url}/v2/rerank", json={"model": "embedding", "query": query,
                                                                "documents": docs}, timeout=60)
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [r["index"] for r in results] == [item.index for item in expected.items]
        assert [r["relevance_score"] for r in results] == pytest.approx(expected.scores, abs=1e-4)
    finally:
        server.stop()
