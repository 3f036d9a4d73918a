"""Prometheus metrics of the serve worker, in a registry of their own (one per server)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True)
class ClientCounters:
    """The per-client counters of one client (label values resolved once)."""

    requests: Counter
    refused: Counter
    rate_limited: Counter


class ServingMetrics:
    """Requests by endpoint and status code, latency, errors, requests by client, and the state of the
    TLS material and of the allow-list.

    ``endpoint`` is the name of the API route (``infer``, ``model_metadata``, ...), or
    ``unmatched``, so label values stay bounded whatever paths clients send; ``client`` is the CN
    of a certificate the model's CA signed, one of the names the operator issued certificates to.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._clients: dict[str, ClientCounters] = {}
        self.requests = Counter(
            "securemodel_serving_requests",
            "Requests answered, by endpoint and HTTP status code.",
            ["endpoint", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "securemodel_serving_request_duration_seconds",
            "Time from request to response, by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "securemodel_serving_errors",
            "Requests that failed, by endpoint and class: client (4xx) or server (5xx).",
            ["endpoint", "class"],
            registry=self.registry,
        )
        self.tls_reloads = Counter(
            "securemodel_serving_tls_reloads",
            "Attempts to load changed TLS files from the Secret, by result (loaded, rejected).",
            ["result"],
            registry=self.registry,
        )
        self.client_requests = Counter(
            "securemodel_serving_client_requests",
            "Requests on the mutual-TLS port, by client (the CN of its certificate), whatever the answer.",
            ["client"],
            registry=self.registry,
        )
        self.client_refused = Counter(
            "securemodel_serving_client_refused",
            "Requests refused (403) because the client certificate is not on the allow-list, by client (CN).",
            ["client"],
            registry=self.registry,
        )
        self.client_rate_limited = Counter(
            "securemodel_serving_client_rate_limited",
            "Requests refused (429) because the client exceeded its rate limit, by client.",
            ["client"],
            registry=self.registry,
        )
        self.allow_list_reloads = Counter(
            "securemodel_serving_allow_list_reloads",
            "Attempts to load a changed allow-list file, by result (loaded, rejected).",
            ["result"],
            registry=self.registry,
        )
        self.allow_list_clients = Gauge(
            "securemodel_serving_allow_list_clients",
            "Clients on the allow-list in force.",
            registry=self.registry,
        )
        self.certificate_expiry = Gauge(
            "securemodel_serving_certificate_expiry_timestamp_seconds",
            "notAfter of the server certificate in use, as a Unix timestamp.",
            registry=self.registry,
        )

    def client(self, name: str) -> ClientCounters:
        """The counters of client ``name``."""
        counters = self._clients.get(name)
        if counters is None:
            counters = self._clients[name] = ClientCounters(
                self.client_requests.labels(name),
                self.client_refused.labels(name),
                self.client_rate_limited.labels(name),
            )
        return counters

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        """Record one answered request."""
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        if status >= 400:
            self.errors.labels(endpoint, "server" if status >= 500 else "client").inc()

    def certificate_loaded(self, not_after: datetime) -> None:
        """Record that a server certificate expiring at ``not_after`` is now in use."""
        self.certificate_expiry.set(not_after.timestamp())

    def exposition(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry)
