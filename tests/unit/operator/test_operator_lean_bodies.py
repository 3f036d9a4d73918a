"""kopf keeps the objects it watches without their managed fields, and every other field as sent."""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
from typing import Any

import aiohttp
import kopf
import pytest
from aiohttp import web
from kopf._cogs.clients import api as kopf_api

from securemodel.operator import lean_bodies
from securemodel.operator.connections import bounded_session

MANAGED = [{"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:spec": {"f:data": {}}}}]


def model(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "securemodel.io/v1alpha1",
        "kind": "SecureModel",
        "metadata": {"name": name, "namespace": "team-a", "uid": "u-" + name, "labels": {"app": "x"},
                     "managedFields": copy.deepcopy(MANAGED)},  # fmt: skip
        "spec": {"data": {"source": "pvc://d/x.npz"}, "metadata": {"managedFields": "a spec field, kept"}},
        "status": {"conditions": [{"type": "Ready", "status": "False"}]},
    }


def without(obj: dict[str, Any]) -> dict[str, Any]:
    kept = copy.deepcopy(obj)
    del kept["metadata"]["managedFields"]
    return kept


LISTED = {"kind": "SecureModelList", "metadata": {"resourceVersion": "7"}}
GONE = {"type": "ERROR", "object": {"kind": "Status", "code": 410}}


@pytest.mark.parametrize(("document", "expected"), [
    (model("a"), without(model("a"))),
    ({"type": "MODIFIED", "object": model("a")}, {"type": "MODIFIED", "object": without(model("a"))}),
    ({**LISTED, "items": [model("a"), model("b")]}, {**LISTED, "items": [without(model("a")), without(model("b"))]}),
    (GONE, GONE),
    ([1, 2], [1, 2]),
    ("text", "text"),
])  # fmt: skip
def test_only_the_managed_fields_of_each_object_go(document: Any, expected: Any) -> None:
    assert lean_bodies.loads(json.dumps(document)) == expected
    assert lean_bodies.loads(json.dumps(document).encode()) == expected


def test_kopf_parses_each_watch_line_with_its_modules_json_loads() -> None:
    """What :func:`lean_bodies.install` relies on: were kopf to parse its watch lines otherwise, the bodies would
    silently keep their managed fields."""
    source = inspect.getsource(kopf_api.stream)
    assert "yield json.loads(line.decode('utf-8'))" in source
    assert "json" not in kopf_api.stream.__code__.co_varnames  # the module's global, not a local


def test_once_installed_kopf_parses_watch_lines_without_the_managed_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kopf_api, "json", json)
    lean_bodies.install()
    lean_bodies.install()  # idempotent
    line = json.dumps({"type": "ADDED", "object": model("a")}).encode()
    assert kopf_api.json.loads(line.decode("utf-8")) == {"type": "ADDED", "object": without(model("a"))}
    assert kopf_api.json.dumps is json.dumps and kopf_api.json.JSONDecodeError is json.JSONDecodeError


def test_install_refuses_a_kopf_that_parses_with_something_else(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kopf_api, "json", object())
    with pytest.raises(RuntimeError, match="review lean_bodies"):
        lean_bodies.install()


def test_the_session_kopf_gets_parses_answers_without_the_managed_fields() -> None:
    """A real HTTP round trip through the session the operator hands kopf: a listing and a patch's answer."""
    listing = {"kind": "SecureModelList", "metadata": {}, "items": [model("a"), model("b")]}

    async def exchange() -> tuple[Any, Any, bytes]:
        async def listed_models(_: web.Request) -> web.Response:
            return web.json_response(listing)

        async def patched_model(_: web.Request) -> web.Response:
            return web.json_response(model("c"))

        app = web.Application()
        app.router.add_get("/list", listed_models)
        app.router.add_patch("/one", patched_model)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        context = bounded_session(kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}"), 4)
        session: aiohttp.ClientSession = context.aiohttp_session
        try:
            async with session.get(f"http://127.0.0.1:{port}/list") as response:
                listed = await response.json()
            async with session.patch(f"http://127.0.0.1:{port}/one") as response:
                patched = await response.json()
            async with session.get(f"http://127.0.0.1:{port}/list") as response:
                raw = await response.read()
            return listed, patched, raw
        finally:
            await session.close()
            await runner.cleanup()

    listed, patched, raw = asyncio.run(exchange())
    assert listed == {"kind": "SecureModelList", "metadata": {}, "items": [without(model("a")), without(model("b"))]}
    assert patched == without(model("c"))
    assert json.loads(raw) == listing  # the bytes themselves are untouched
