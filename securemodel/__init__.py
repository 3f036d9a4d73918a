"""securemodel: a Kubernetes operator for private, compressed, mTLS-served models.

Sub-packages: ``api`` (the CRD schemas), ``operator`` (kopf handlers), ``workers`` (pod
entrypoints), ``privacy`` (accounting and ledger rules) and ``crypto`` (keys and masks).
"""

from importlib.metadata import version

__version__ = version("securemodel")
