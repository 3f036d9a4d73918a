"""``flower-superlink`` with its Control and Runtime APIs closed to every host but the pod itself.

Since Flower 1.40 the SuperLink serves three HTTP APIs on one port: the Fleet API the SuperNodes
use, the Control API (register nodes, start runs: with Flower's default no-op account plugin,
unauthenticated) and the Runtime API (the ServerApp's). A silo that can reach the Fleet API
could therefore register extra nodes or start a run whose ClientApp code every other silo would
execute next to its data. This entrypoint runs Flower's own ``flower-superlink`` command
unchanged, except that the ASGI application it serves is wrapped in :class:`FleetOnlyFromOutside`:
a request from a non-loopback peer may reach only ``/v1/fleet/`` and ``/health``; everything
else answers 403. The aggregator pod's own processes (Flower's SuperExec and ServerApp, and the
run submission of :mod:`.aggregate`) connect over the loopback interface.

Guarantee: the peer address is the TCP peer (uvicorn's proxy-header rewriting is switched off),
so a remote host cannot claim to be local.

Usage: ``python -m securemodel.workers.federated.superlink <flower-superlink arguments>``.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PUBLIC_PREFIXES: Final[tuple[str, ...]] = ("/v1/fleet/", "/health")


def is_loopback(client: tuple[str, int] | None) -> bool:
    """Whether the TCP peer is on the loopback interface (a missing peer is not)."""
    if client is None:
        return False
    try:
        return ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False


class FleetOnlyFromOutside:
    """ASGI middleware: remote peers reach only :data:`PUBLIC_PREFIXES`; loopback peers reach everything."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not (
            scope.get("path", "").startswith(PUBLIC_PREFIXES) or is_loopback(scope.get("client"))
        ):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            body = b"only the Fleet API is served to other hosts"
            headers = [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ]
            await send({"type": "http.response.start", "status": 403, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def main() -> None:
    """Run ``flower-superlink`` with :class:`FleetOnlyFromOutside` around its application."""
    import uvicorn
    from flwr.superlink.cli.flower_superlink import flower_superlink

    serve = uvicorn.run

    def guarded_run(app: ASGIApp, **options: Any) -> None:
        serve(FleetOnlyFromOutside(app), **{**options, "proxy_headers": False})

    # flower_superlink() calls uvicorn.run(app=..., ...) once with the SuperLink's FastAPI app.
    uvicorn.run = guarded_run  # type: ignore[assignment]
    sys.argv[0] = "flower-superlink"
    flower_superlink()


if __name__ == "__main__":
    main()
