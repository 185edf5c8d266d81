"""Prometheus metrics of one app instance (its own registry, so several apps can live in one process).

Named telemetry, not metrics: :mod:`surerank.eval.metrics` holds the ranking metrics (nDCG, MRR).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# the paths requests are counted under; any other is "other", so a scan of random URLs cannot grow the label set
KNOWN_PATHS = frozenset(
    ("/v1/rerank", "/v2/rerank", "/rerank", "/v1/models", "/health", "/ready", "/metrics", "/openapi.json", "/docs"))


def path_label(path: str) -> str:
    """The ``path`` label of a request's metrics."""
    return path if path in KNOWN_PATHS else "other"


class ServeMetrics:
    """Every counter, histogram and gauge the service exports under ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("surerank_http_requests", "HTTP requests answered",
                                ["path", "status"], registry=self.registry)
        self.latency = Histogram(
            "surerank_http_request_seconds", "HTTP request latency", ["path"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.documents = Counter("surerank_documents_ranked", "documents ranked", ["model"],
                                 registry=self.registry)
        self.shed = Counter("surerank_requests_shed", "requests refused by load shedding",
                            ["model", "status"], registry=self.registry)
        self.batch_requests = Histogram(
            "surerank_batch_requests", "requests merged into one model batch", ["model"],
            registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.batch_documents = Histogram(
            "surerank_batch_documents", "documents in one model batch", ["model"], registry=self.registry,
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000))
        self.batch_seconds = Histogram(
            "surerank_batch_seconds", "model time of one batch", ["model"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.dropped_requests = Counter(
            "surerank_requests_dropped", "queued requests taken out before their batch: the client went away "
            "(client_gone), request_timeout_s passed (timeout) or the server cancelled the handler (cancelled, "
            "e.g. at shutdown); their documents were not ranked",
            ["model", "reason"], registry=self.registry)
        self.dropped_documents = Counter(
            "surerank_documents_dropped", "documents of dropped requests, not ranked", ["model", "reason"],
            registry=self.registry)
        self.connections_closed = Counter(
            "surerank_connections_closed", "connections the server closed on a limit: header_too_large (431), "
            "header_timeout / body_timeout (408), max_connections (503), keepalive_timeout (idle)",
            ["reason"], registry=self.registry)
        self.internal_errors = Counter("surerank_internal_errors", "500 answers (each logged with its id)",
                                       ["path"], registry=self.registry)
        self.queue_depth = Gauge("surerank_queue_requests", "requests waiting for a batch", ["model"],
                                 registry=self.registry)
        self.queue_tokens = Gauge("surerank_queue_tokens", "estimated tokens waiting", ["model"],
                                  registry=self.registry)

    def batch_callback(self, model: str) -> Callable[[int, int, float], None]:
        """What the scheduler of ``model`` calls after each batch (children resolved once, not per batch)."""
        requests = self.batch_requests.labels(model)
        documents = self.batch_documents.labels(model)
        seconds = self.batch_seconds.labels(model)
        ranked = self.documents.labels(model)

        def on_batch(n_requests: int, n_documents: int, elapsed: float) -> None:
            requests.observe(n_requests)
            documents.observe(n_documents)
            seconds.observe(elapsed)
            ranked.inc(n_documents)

        return on_batch

    def drop_callback(self, model: str) -> Callable[[str, int], None]:
        """What the scheduler of ``model`` calls for each request taken out of its queue unranked."""
        def on_drop(reason: str, n_documents: int) -> None:
            self.dropped_requests.labels(model, reason).inc()
            self.dropped_documents.labels(model, reason).inc(n_documents)

        return on_drop

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
