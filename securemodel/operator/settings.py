"""Every setting of the operator, in one place."""

import logging
import socket

import kopf

from securemodel.api import GROUP

COMPONENT = "securemodel-operator"
# kopf serves one health endpoint; the Deployment uses it for liveness and readiness.
DEFAULT_HEALTH_ENDPOINT = "http://0.0.0.0:8080/healthz"
# Seconds before a handler that raised is retried (kopf's default is 60).
RETRY_BACKOFF = 5


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: object) -> None:
    """Tune kopf: our own annotation prefix, explicit Events only, and no finalizers."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.reporting_component = COMPONENT
    settings.posting.reporting_instance = socket.gethostname()
    settings.posting.event_name_prefix = "securemodel-"
    settings.posting.level = logging.INFO
    settings.posting.loggers = False
