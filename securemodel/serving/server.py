"""The serving process: the OIP API on a mutual-TLS port, probes and metrics on a plain-HTTP port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TextIO

from aiohttp import web

from securemodel.serving.access import ClientGate
from securemodel.serving.app import MAX_BATCH, build_app, build_probe_app
from securemodel.serving.audit import AuditLog
from securemodel.serving.metrics import ServingMetrics
from securemodel.serving.predictor import Predictor
from securemodel.serving.tls import ServerTLS

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 10.0


class ServingServer:
    """Serve ``predictor`` while inside ``async with``, re-reading the TLS files and the allow-list
    every ``reload_interval`` s.

    With ``allow_list`` (the allow-list file, see ``allowlist``) only the client certificates on it
    are answered, each client within its rate limit (see ``access``); without it, every certificate
    of the model's CA. With ``audit``, one JSON line per request on the mutual-TLS port is written
    to it (see ``audit``). Ready (``/v2/health/ready``) while the server certificate in use is
    unexpired and the server is not shutting down. ``port`` and ``metrics_port`` are the bound
    ports (useful with port 0).
    """

    def __init__(
        self,
        predictor: Predictor,
        tls_dir: Path,
        *,
        host: str | None = None,
        port: int = 8443,
        metrics_port: int = 9090,
        reload_interval: float = 2.0,
        max_batch: int = MAX_BATCH,
        version: str | None = None,
        allow_list: Path | None = None,
        audit: TextIO | None = None,
    ) -> None:
        self.predictor = predictor
        self.metrics = ServingMetrics()
        self.tls = ServerTLS(tls_dir, self.metrics)
        self.gate = ClientGate(allow_list, self.metrics)
        self.port = port
        self.metrics_port = metrics_port
        self._host = host
        self._reload_interval = reload_interval
        self._stopping = False
        app = build_app(
            predictor,
            self.metrics,
            self.ready,
            max_batch=max_batch,
            version=version,
            gate=self.gate,
            audit=None if audit is None else AuditLog(audit, predictor.name, version),
        )
        self._api = web.AppRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT, access_log=None)
        self._probes = web.AppRunner(build_probe_app(self.metrics, self.ready), access_log=None)
        self._watcher: asyncio.Task[None] | None = None

    def ready(self) -> bool:
        """Whether to take traffic: not shutting down, and the server certificate has not expired."""
        return not self._stopping and datetime.now(UTC) < self.tls.not_after

    def drain(self) -> None:
        """Report not ready from now on, and go on answering until the ``async with`` block ends."""
        self._stopping = True

    async def __aenter__(self) -> ServingServer:
        await self._api.setup()
        await self._probes.setup()
        await web.TCPSite(self._api, self._host, self.port, ssl_context=self.tls.context).start()
        await web.TCPSite(self._probes, self._host, self.metrics_port).start()
        self.port = self._api.addresses[0][1]
        self.metrics_port = self._probes.addresses[0][1]
        self._watcher = asyncio.create_task(self._watch())
        log.info(
            "serving model %s: OIP v2 over mutual TLS on port %d, probes and metrics on port %d",
            self.predictor.name,
            self.port,
            self.metrics_port,
        )
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self._api.cleanup()  # stops accepting, lets requests in flight finish
        await self._probes.cleanup()
        log.info("stopped serving model %s", self.predictor.name)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._reload_interval)
            try:
                self.tls.refresh()
                self.gate.refresh()
            except Exception:  # the timer must outlive any surprise: it is what applies a revocation
                log.exception("checking the TLS files and the allow-list failed; trying again")
