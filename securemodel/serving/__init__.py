"""Model serving: the Open Inference Protocol v2 REST API over mutual TLS, with metrics and probes.

``predictor`` is the model interface, ``oip`` the protocol, ``tls`` the hot-reloading mTLS
context, ``allowlist`` the file of the client certificates in force and their rate limits,
``ratelimit`` the token buckets, ``access`` the per-request check of both, ``audit`` the JSON
audit trail, ``metrics`` the Prometheus metrics, ``app`` the HTTP applications and ``server`` the
process that runs them.
"""
