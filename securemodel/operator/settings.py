"""Every setting of the operator, in one place."""

import logging
import os
import socket
from collections.abc import Iterable

import kopf

from securemodel.api import GROUP
from securemodel.api.privacy_budget import KIND as BUDGET_KIND
from securemodel.operator import lean_bodies

COMPONENT = "securemodel-operator"
# kopf serves one health endpoint; the Deployment uses it for liveness and readiness.
DEFAULT_HEALTH_ENDPOINT = "http://0.0.0.0:8080/healthz"
# Seconds before a handler that raised is retried (kopf's default is 60).
RETRY_BACKOFF = 5
# kopf's finalizer: on every SecureModel (deleting one settles its claims first), on a
# PrivacyBudget unless its deletion is allowed by annotation. A model claims only once it is in place.
FINALIZER = f"{GROUP}/finalizer"
# A stopped daemon may finish what it is doing (a ledger write, a calibration) for this long
# before kopf cancels it, and then this long more before kopf leaves it orphaned.
DAEMON_CANCELLATION_BACKOFF = 5.0
DAEMON_CANCELLATION_TIMEOUT = 10.0
# Threads that calibrate noise (CPU-bound, seconds each), apart from the threads that talk to
# the API server, so a burst of calibrations never delays ledger writes.
CALIBRATION_THREADS = 2
# Threads that make the blocking calls of the Kubernetes client (every reconciler's reads and
# writes, through asyncio.to_thread), and the client's connections to the API server: each
# model's reconciler waits on its own calls, so this is how many models act at once. Python's
# default (CPU count + 4) left a burst of new models queued behind six calls in flight.
API_THREADS = 32
# Calibrations remembered by plan (a few hundred bytes each).
CALIBRATIONS_KEPT = 1024
# Read-modify-write rounds of one ledger transaction before it gives up (each lost round means
# another writer won; a handler that gets LedgerContention is retried by kopf).
LEDGER_MAX_ATTEMPTS = 100
# Seconds an idle kopf worker (one per watched object with events to process) waits for the object's next event
# before it exits (kopf's default is 5). An idle worker keeps its last event, the whole object as the watch
# delivered it: in a burst of 1000 models, 1000-2000 workers held 10-38 MB of them (measured).
WORKER_IDLE_SECONDS = 0.5
# How often a blocked budget deletion is re-checked (annotating the budget unblocks it at once).
DELETION_RECHECK_SECONDS = 600.0


class DiffBaseOfChangeHandlers(kopf.AnnotationsDiffBaseStorage):
    """kopf's last-handled configuration (an annotation), kept only on the kinds that have create or update
    handlers to diff against it: PrivacyBudget.

    A SecureModel or FederatedRound has a daemon and a deletion handler only. For them the configuration last
    handled is always the current one, so kopf sees no change to handle and never patches one more annotation,
    a copy of the spec, onto each new object: a write and a watch event per object less, and smaller objects.
    """

    def __init__(self, kinds: frozenset[str]) -> None:
        super().__init__(prefix=GROUP, key="last-handled-configuration")
        self.kinds = kinds

    def build(self, *, body: kopf.Body, extra_fields: Iterable[str] | None = None) -> kopf.BodyEssence:
        """kopf's essence of a tracked kind, built without first copying what it leaves out (the status, which
        holds a budget's whole ledger, and the managed fields); an empty one for other kinds, which no handler
        diffs against (kopf builds one per watch event)."""
        if body.get("kind") not in self.kinds:
            return kopf.BodyEssence()
        if not extra_fields:
            metadata = {key: value for key, value in body["metadata"].items() if key != "managedFields"}
            body = kopf.Body({**{key: value for key, value in body.items() if key != "status"}, "metadata": metadata})
        return super().build(body=body, extra_fields=extra_fields)

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        if body.get("kind") in self.kinds:
            return super().fetch(body=body)
        return self.build(body=body)

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        if body.get("kind") in self.kinds:
            super().store(body=body, patch=patch, essence=essence)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: object) -> None:
    """Tune kopf: our own annotation prefix and finalizer name, short-lived idle workers, explicit Events only, and
    watched objects kept without their managed fields (:mod:`securemodel.operator.lean_bodies`)."""
    lean_bodies.install()
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = DiffBaseOfChangeHandlers(frozenset({BUDGET_KIND.kind}))
    settings.persistence.finalizer = FINALIZER
    settings.queueing.idle_timeout = WORKER_IDLE_SECONDS
    settings.posting.reporting_component = COMPONENT
    settings.posting.reporting_instance = socket.gethostname()
    settings.posting.event_name_prefix = "securemodel-"
    settings.posting.level = logging.INFO
    settings.posting.loggers = False
# The worker image of train, compress and serve pods (spec.model.image overrides it per model).
WORKER_IMAGE = os.environ.get("SECUREMODEL_WORKER_IMAGE", "securemodel-worker:dev")
# Whether every pod the operator runs waits in an init container until its NetworkPolicy is enforced
# (securemodel.workers.isolation); "false" only on a cluster without a NetworkPolicy engine, where pods
# are then not isolated at all.
AWAIT_NETWORK_ISOLATION = os.environ.get("SECUREMODEL_AWAIT_NETWORK_ISOLATION", "true").lower() != "false"
# The namespace whose pods may scrape the serving pods' metrics port (its NetworkPolicy); unset: none may.
METRICS_NAMESPACE = os.environ.get("SECUREMODEL_METRICS_NAMESPACE") or None
# Size of each model's artifact PersistentVolumeClaim.
ARTIFACTS_STORAGE = os.environ.get("SECUREMODEL_ARTIFACTS_STORAGE", "256Mi")
# A model's reconciler runs at least this often while it works (a watch event of the model, its
# budget or a child wakes it at once), and this often once it is done: the resync that renews
# certificates and puts back any child that drifted without an event reaching the operator.
PIPELINE_RESYNC_SECONDS = 5.0
PIPELINE_IDLE_RESYNC_SECONDS = float(os.environ.get("SECUREMODEL_RESYNC_SECONDS", "60"))
# A model being deleted re-checks this often whether its claims are settled and its train pods gone.
DELETION_SETTLE_SECONDS = 3.0
# Leader election (two replicas, one active): the Lease's name, how long it holds without renewal,
# and how often the leader renews it. A standby takes over within LEASE_SECONDS of the leader's death.
LEASE_NAME = "securemodel-operator"
LEASE_SECONDS = 15
LEASE_RENEW_SECONDS = 5.0
# The ClusterRole whose rules the operator keeps equal to get on every client-certificate Secret it
# issued (securemodel.operator.secure_model.client_role); unset: no such role is kept.
CLIENT_SECRETS_ROLE = os.environ.get("SECUREMODEL_CLIENT_SECRETS_ROLE") or None
# How often that role is re-read to undo an edit by hand, and how soon a failed write is tried again.
CLIENT_ROLE_RESYNC_SECONDS = 60.0
CLIENT_ROLE_RETRY_SECONDS = 5.0
