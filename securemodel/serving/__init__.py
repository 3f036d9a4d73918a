"""Model serving: the Open Inference Protocol v2 REST API over mutual TLS, with metrics and probes.

``predictor`` is the model interface, ``oip`` the protocol, ``tls`` the hot-reloading mTLS
context, ``metrics`` the Prometheus metrics, ``app`` the HTTP applications and ``server`` the
process that runs them.
"""
