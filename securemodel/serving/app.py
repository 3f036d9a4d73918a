"""The HTTP applications of the serve worker: the OIP v2 API, and probes plus metrics.

The API application is meant for the mutual-TLS port; the probe application for a separate
plain-HTTP port that kubelet and Prometheus reach without a client certificate. The probe port
answers only ``/metrics`` and the two health endpoints, which reveal nothing about the model.

On the API, every request passes the ``ClientGate`` (allow-list, rate limit) before any handler
runs, gets an ``X-Request-Id`` header, and leaves one line in the audit trail.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from datetime import UTC, datetime

import numpy as np
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

import securemodel
from securemodel.serving import oip
from securemodel.serving.access import FORBIDDEN, ClientGate, Refusal
from securemodel.serving.audit import AuditLog
from securemodel.serving.metrics import CONTENT_TYPE, ServingMetrics
from securemodel.serving.predictor import Predictor

log = logging.getLogger(__name__)

MAX_BATCH = 1024
REQUEST_ID = "X-Request-Id"
# The batch size of the inference being answered, for the audit trail: the middleware sets it to
# None before the handler runs and reads it after, in the same task.
_batch_size: ContextVar[int | None] = ContextVar("batch_size", default=None)


def build_app(
    predictor: Predictor,
    metrics: ServingMetrics,
    ready: Callable[[], bool],
    *,
    max_batch: int = MAX_BATCH,
    version: str | None = None,
    gate: ClientGate | None = None,
    audit: AuditLog | None = None,
) -> web.Application:
    """The OIP v2 REST API for ``predictor`` (of ``version``, if given); every request is counted in ``metrics``.

    With ``gate`` (mutual TLS only), a request is answered only if the gate admits it; with
    ``audit``, every request is written to the audit trail. ``predict_proba`` runs on one worker
    thread, so the event loop keeps answering handshakes and probes while a batch is computed.
    """
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
    # A full batch as JSON: at most ~32 characters per number, plus room for the envelope.
    max_body = 2**20 + 32 * max_batch * math.prod(predictor.input_shape)
    app = web.Application(middlewares=[_observed(metrics, gate, audit)], client_max_size=max_body)

    def check_model(request: web.Request) -> None:
        if request.match_info["model"] != predictor.name:
            raise oip.OipError(
                404, f"unknown model {request.match_info['model']!r}; this server serves {predictor.name!r}"
            )

    async def server_metadata(request: web.Request) -> web.Response:
        return web.json_response(oip.server_metadata(securemodel.__version__))

    async def model_metadata(request: web.Request) -> web.Response:
        check_model(request)
        return web.json_response(oip.model_metadata(predictor, version))

    async def model_ready(request: web.Request) -> web.Response:
        check_model(request)
        return _health(ready())

    async def infer(request: web.Request) -> web.Response:
        check_model(request)
        try:
            body = json.loads(await request.read())
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise oip.OipError(400, "the request body is not valid JSON") from None
        parsed = oip.parse_infer_request(body, predictor, max_batch=max_batch)
        _batch_size.set(parsed.batch.shape[0])
        loop = asyncio.get_running_loop()
        try:
            probabilities = await loop.run_in_executor(executor, predictor.predict_proba, parsed.batch)
        except Exception as err:
            log.exception("model %s failed on a batch of %d", predictor.name, parsed.batch.shape[0])
            raise oip.OipError(500, f"model {predictor.name!r} failed: {type(err).__name__}") from None
        return web.json_response(oip.infer_response(predictor, parsed, np.asarray(probabilities), version))

    async def shutdown(app: web.Application) -> None:
        executor.shutdown(wait=True)

    _add_health_routes(app, ready)
    app.router.add_get("/v2", server_metadata, name="server_metadata")
    app.router.add_get("/v2/models/{model}", model_metadata, name="model_metadata")
    app.router.add_get("/v2/models/{model}/ready", model_ready, name="model_ready")
    app.router.add_post("/v2/models/{model}/infer", infer, name="infer")
    app.on_cleanup.append(shutdown)
    return app


def build_probe_app(metrics: ServingMetrics, ready: Callable[[], bool]) -> web.Application:
    """``/metrics`` (Prometheus) and ``/v2/health/live`` and ``/v2/health/ready`` (kubelet probes)."""

    async def exposition(request: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    _add_health_routes(app, ready)
    app.router.add_get("/metrics", exposition, name="metrics")
    return app


def _add_health_routes(app: web.Application, ready: Callable[[], bool]) -> None:
    async def live(request: web.Request) -> web.Response:
        return _health(True)

    async def readiness(request: web.Request) -> web.Response:
        return _health(ready())

    app.router.add_get("/v2/health/live", live, name="live")
    app.router.add_get("/v2/health/ready", readiness, name="ready")


def _health(ok: bool) -> web.Response:
    """A protocol health answer: the status code is the answer (200 true, 400 false), the body is empty."""
    return web.Response(status=200 if ok else 400)


def _observed(metrics: ServingMetrics, gate: ClientGate | None, audit: AuditLog | None) -> Middleware:
    """Middleware: admit the request (``gate``), answer errors with the protocol's ``{"error": ...}``
    body, tag the response with a request id, and record the request in ``metrics`` and ``audit``."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        received = datetime.now(UTC)
        started = time.perf_counter()
        request_id = uuid.uuid4().hex
        endpoint = request.match_info.route.name or "unmatched"
        verdict = None
        if gate is not None:
            transport = request.transport
            verdict = gate.check(transport.get_extra_info("ssl_object") if transport is not None else None)
        response: web.StreamResponse
        reset = _batch_size.set(None)
        if verdict is not None and verdict.refusal is not None:
            response = _refused(verdict.refusal)
        else:
            try:
                response = await handler(request)
            except oip.OipError as err:
                response = web.json_response({"error": err.message}, status=err.status)
            except web.HTTPException as err:  # from the router (404, 405) or the body size limit (413)
                response = web.json_response({"error": err.reason}, status=err.status)
            except Exception:
                log.exception("unexpected error answering %s %s", request.method, request.path)
                response = web.json_response({"error": "internal server error"}, status=500)
        seconds = time.perf_counter() - started
        batch_size = _batch_size.get()
        _batch_size.reset(reset)
        response.headers[REQUEST_ID] = request_id
        metrics.observe(endpoint, response.status, seconds)
        if audit is not None:
            audit.record(
                received=received,
                request_id=request_id,
                client=verdict.client if verdict is not None else "-",
                serial=verdict.serial if verdict is not None else None,
                endpoint=endpoint,
                status=response.status,
                seconds=seconds,
                batch_size=batch_size,
            )
        return response

    return middleware


def _refused(refusal: Refusal) -> web.Response:
    """The answer to a refused request; a 403 also closes the connection."""
    response = web.json_response({"error": refusal.message}, status=refusal.status)
    if refusal.retry_after is not None:
        response.headers["Retry-After"] = str(refusal.retry_after)
    if refusal.status == FORBIDDEN:
        response.force_close()
    return response
