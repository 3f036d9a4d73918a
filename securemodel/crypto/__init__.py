"""Pure cryptography: the per-model PKI (``pki``) and authenticated artifact encryption (``artifacts``).

Nothing here talks to Kubernetes or logs; key material only leaves these modules as return values.
"""
