"""Leader election on a ``coordination.k8s.io`` Lease: of several operator processes, one reconciles.

Like client-go's leader election: a candidate takes the Lease when it is free or when its record
(holder and renew time) has not changed for ``leaseDurationSeconds`` by the candidate's own clock
(so clocks need not agree); every write carries the resourceVersion it read, so two candidates
never both win. The leader renews every :data:`~.settings.LEASE_RENEW_SECONDS`; if it cannot renew
for a whole lease duration, or sees another holder, it exits at once (the Deployment restarts it
as a candidate) rather than risk two processes writing the same objects.
"""

from __future__ import annotations

import http.server
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import kubernetes

from securemodel.operator import kube

logger = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    """Campaigns for and keeps the Lease ``namespace/name`` as ``identity``."""

    def __init__(self, client: kubernetes.client.ApiClient, namespace: str, name: str, identity: str,
                 duration: int, renew: float) -> None:  # fmt: skip
        self._api = kubernetes.client.CoordinationV1Api(client)
        self._client = client
        self.namespace, self.name, self.identity = namespace, name, identity
        self.duration, self.renew = duration, renew
        self._observed: tuple[Any, Any] | None = None
        self._observed_at = 0.0

    def _record(self, lease: dict[str, Any]) -> tuple[Any, Any]:
        spec = lease.get("spec") or {}
        return (spec.get("holderIdentity"), spec.get("renewTime"))

    def try_acquire_or_renew(self) -> bool:
        """One attempt: True if this process holds the Lease afterwards."""
        try:
            stored = self._client.sanitize_for_serialization(self._api.read_namespaced_lease(self.name, self.namespace))
        except kubernetes.client.ApiException as error:
            if error.status != 404:
                raise
            body = {"metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self.duration,
                             "acquireTime": _now(), "renewTime": _now(), "leaseTransitions": 0}}  # fmt: skip
            try:
                self._api.create_namespaced_lease(self.namespace, body, field_manager=kube.FIELD_MANAGER)
            except kubernetes.client.ApiException as conflict:
                if conflict.status == 409:
                    return False
                raise
            return True
        record = self._record(stored)
        if record != self._observed:
            self._observed, self._observed_at = record, time.monotonic()
        spec = stored.get("spec") or {}
        holder = spec.get("holderIdentity")
        expired = time.monotonic() - self._observed_at >= int(spec.get("leaseDurationSeconds") or self.duration)
        if holder and holder != self.identity and not expired:
            return False
        new_spec = {**spec, "holderIdentity": self.identity, "leaseDurationSeconds": self.duration, "renewTime": _now()}
        if holder != self.identity:
            new_spec |= {"acquireTime": _now(), "leaseTransitions": int(spec.get("leaseTransitions") or 0) + 1}
        stored["spec"] = new_spec
        try:
            self._api.replace_namespaced_lease(self.name, self.namespace, stored, field_manager=kube.FIELD_MANAGER)
        except kubernetes.client.ApiException as conflict:
            if conflict.status == 409:
                return False
            raise
        return True

    def acquire(self) -> None:
        """Block until this process holds the Lease."""
        logger.info("waiting to lead: Lease %s/%s, identity %s", self.namespace, self.name, self.identity)
        while True:
            try:
                if self.try_acquire_or_renew():
                    logger.info("leading: Lease %s/%s", self.namespace, self.name)
                    return
            except kubernetes.client.ApiException as error:
                logger.warning("leader election: %s", error.reason)
            time.sleep(self.renew)

    def release(self) -> None:
        """Give the Lease up on a clean exit, so a standby takes over at once (best effort)."""
        try:
            stored = self._client.sanitize_for_serialization(self._api.read_namespaced_lease(self.name, self.namespace))
            if (stored.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            stored["spec"] = {**stored["spec"], "holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": _now()}
            self._api.replace_namespaced_lease(self.name, self.namespace, stored, field_manager=kube.FIELD_MANAGER)
        except kubernetes.client.ApiException as error:
            logger.warning("could not release Lease %s/%s: %s", self.namespace, self.name, error.reason)

    def keep(self, lost: Callable[[], None]) -> threading.Thread:
        """Renew in a daemon thread; call ``lost`` when the Lease cannot be kept."""

        def run() -> None:
            last = time.monotonic()
            while True:
                time.sleep(self.renew)
                try:
                    if self.try_acquire_or_renew():
                        last = time.monotonic()
                        continue
                    logger.error("leadership lost: another process holds Lease %s/%s", self.namespace, self.name)
                except Exception as error:  # noqa: BLE001 - any failure to renew counts against the lease
                    logger.warning("could not renew Lease %s/%s: %s", self.namespace, self.name, error)
                    if time.monotonic() - last < self.duration - self.renew:
                        continue
                lost()
                return

        thread = threading.Thread(target=run, name="lease-renewal", daemon=True)
        thread.start()
        return thread


def leave_on_sigterm() -> None:
    """Until kopf installs its own graceful stop, which replaces this handler, SIGTERM ends the process at once with
    status 0.

    In a container the operator is PID 1, for which the kernel drops a signal that has no handler: a standby
    (waiting in :meth:`LeaseElector.acquire`) ignored the kubelet's SIGTERM and was killed only after the pod's
    whole grace period (31 s measured), which every rollout and every deletion of the Deployment waited for. Before
    kopf runs, the process has reconciled nothing, so it has nothing to finish (a Lease it has just taken expires
    after its duration, as a killed leader's does).
    """

    def leave(signum: int, _frame: object) -> None:
        logger.info("%s before reconciling anything: exiting", signal.Signals(signum).name)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, leave)


def exit_now() -> None:
    """Leave at once, without cleanup that could still write: another process may lead already."""
    os._exit(3)


class StandbyHealth:
    """Answers the health endpoint while this process waits to lead (a standby is alive, not stuck)."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                ok = self.path == parsed.path
                self.send_response(200 if ok else 404)
                self.end_headers()
                self.wfile.write(b'{"standby": true}' if ok else b"")

            def log_message(self, *_: Any) -> None:
                return

        self._server = http.server.ThreadingHTTPServer((parsed.hostname or "0.0.0.0", parsed.port or 80), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="standby-health", daemon=True)

    def __enter__(self) -> StandbyHealth:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
