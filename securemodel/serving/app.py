"""The HTTP applications of the serve worker: the OIP v2 API, and probes plus metrics.

The API application is meant for the mutual-TLS port; the probe application for a separate
plain-HTTP port that kubelet and Prometheus reach without a client certificate. The probe port
answers only ``/metrics`` and the two health endpoints, which reveal nothing about the model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler, Middleware

import securemodel
from securemodel.serving import oip
from securemodel.serving.metrics import CONTENT_TYPE, ServingMetrics
from securemodel.serving.predictor import Predictor

log = logging.getLogger(__name__)

MAX_BATCH = 1024


def build_app(
    predictor: Predictor,
    metrics: ServingMetrics,
    ready: Callable[[], bool],
    *,
    max_batch: int = MAX_BATCH,
    version: str | None = None,
) -> web.Application:
    """The OIP v2 REST API for ``predictor`` (of ``version``, if given); every request is counted in ``metrics``.

    ``predict_proba`` runs on one worker thread, so the event loop keeps answering handshakes
    and probes while a batch is computed.
    """
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
    # A full batch as JSON: at most ~32 characters per number, plus room for the envelope.
    max_body = 2**20 + 32 * max_batch * math.prod(predictor.input_shape)
    app = web.Application(middlewares=[_observed(metrics)], client_max_size=max_body)

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


class ClientAccessLogger(AbstractAccessLogger):
    """Access log naming the client certificate's CN, an audit trail of who queried the model."""

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        transport = request.transport
        certificate = transport.get_extra_info("peercert") if transport is not None else None
        names = [value for rdn in (certificate or {}).get("subject", ()) for key, value in rdn if key == "commonName"]
        self.logger.info(
            "%s %s %d %.1fms client=%s",
            request.method,
            request.path,
            response.status,
            time * 1000,
            names[0] if names else "-",
        )


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


def _observed(metrics: ServingMetrics) -> Middleware:
    """Middleware: answer errors with the protocol's ``{"error": ...}`` body and record every request."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        endpoint = request.match_info.route.name or "unmatched"
        try:
            response = await handler(request)
        except oip.OipError as err:
            response = web.json_response({"error": err.message}, status=err.status)
        except web.HTTPException as err:  # from the router (404, 405) or the body size limit (413)
            response = web.json_response({"error": err.reason}, status=err.status)
        except Exception:
            log.exception("unexpected error answering %s %s", request.method, request.path)
            response = web.json_response({"error": "internal server error"}, status=500)
        metrics.observe(endpoint, response.status, time.perf_counter() - started)
        return response

    return middleware
