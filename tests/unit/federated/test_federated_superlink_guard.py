"""The SuperLink guard: other hosts reach the Fleet API only; the pod's own processes reach everything."""

import asyncio
from typing import Any

import pytest

from securemodel.workers.federated.superlink import FleetOnlyFromOutside, is_loopback


def call(path: str, client: tuple[str, int] | None) -> tuple[int, bool]:
    """(status, whether the wrapped app ran) for one HTTP request through the guard."""
    reached: list[str] = []
    sent: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "path": path, "client": client, "method": "POST"}
    asyncio.run(FleetOnlyFromOutside(app)(scope, receive, send))
    return sent[0]["status"], bool(reached)


@pytest.mark.parametrize(
    "path", ["/v1/control/start-run", "/v1/control/register-node", "/v1/runtime/acquire-task", "/docs", "/"]
)
def test_remote_peers_cannot_reach_control_or_runtime(path: str) -> None:
    assert call(path, ("10.0.0.7", 40000)) == (403, False)


@pytest.mark.parametrize("path", ["/v1/fleet/pull-messages", "/v1/fleet/activate-node", "/health"])
def test_remote_peers_reach_the_fleet_api(path: str) -> None:
    assert call(path, ("10.0.0.7", 40000)) == (200, True)


@pytest.mark.parametrize("client", [("127.0.0.1", 5000), ("::1", 5000)])
def test_loopback_peers_reach_everything(client: tuple[str, int]) -> None:
    assert call("/v1/control/start-run", client) == (200, True)


def test_unknown_peers_are_remote() -> None:
    assert not is_loopback(None)
    assert not is_loopback(("localhost", 1))  # a name is not an address
    assert call("/v1/control/start-run", None) == (403, False)


def test_lifespan_passes_through() -> None:
    ran: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        ran.append(scope["type"])

    async def noop(*_: Any) -> Any:
        return {}

    asyncio.run(FleetOnlyFromOutside(app)({"type": "lifespan"}, noop, noop))
    assert ran == ["lifespan"]
