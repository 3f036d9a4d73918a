"""kopf's connections to the API server: room for every watch stream, a bounded pool for requests."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import kopf
import kubernetes
import pytest

from securemodel.operator import main  # noqa: F401  (registers the operator's handlers)
from securemodel.operator.connections import (
    DISCOVERY_STREAMS,
    REQUEST_CONNECTIONS,
    bounded_session,
    connection_limit,
    login,
    served,
    watched_resources,
)

# Every kind the operator's handlers index, watch, run daemons for or handle changes of.
OPERATOR_KINDS = ("securemodels", "privacybudgets", "federatedrounds", "jobs", "pods", "deployments", "services",
                  "persistentvolumeclaims", "configmaps", "secrets", "networkpolicies")  # fmt: skip


def test_each_watched_resource_counts_once_whatever_its_handlers() -> None:
    registry = kopf.OperatorRegistry()

    @kopf.index("batch", "v1", "jobs", registry=registry)
    @kopf.on.event("batch", "v1", "jobs", registry=registry)
    @kopf.daemon("example.com", "v1", "things", registry=registry)
    @kopf.on.create("example.com", "v1", "others", registry=registry)
    @kopf.on.startup(registry=registry)
    def handler(**_: Any) -> None: ...

    assert watched_resources(registry) == 3
    assert watched_resources(kopf.get_default_registry()) == len(OPERATOR_KINDS)


def test_the_pool_holds_every_stream_of_every_namespace_and_the_requests() -> None:
    assert connection_limit(11, []) == 11 + DISCOVERY_STREAMS + REQUEST_CONNECTIONS  # cluster-wide: one per resource
    assert connection_limit(11, ["a", "b", "c"]) == 3 * 11 + DISCOVERY_STREAMS + REQUEST_CONNECTIONS


@pytest.mark.parametrize("pattern", ["team-*", "ns-?", "ns-[ab]", "!kube-system", "team-a, team-b"])
def test_namespace_patterns_leave_the_pool_unbounded(pattern: str) -> None:
    assert connection_limit(11, ["fixed", pattern]) == 0


def kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:6443', insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {token: s3cret}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u, namespace: team-a}}]\n"
    )
    return path


@pytest.mark.parametrize(("memo", "limit"), [
    (served(["team-a"]), len(OPERATOR_KINDS) + DISCOVERY_STREAMS + REQUEST_CONNECTIONS),
    (served([]), len(OPERATOR_KINDS) + DISCOVERY_STREAMS + REQUEST_CONNECTIONS),
    (served(["team-*"]), 0),
    (kopf.Memo(), 0),  # started by `kopf run`, not securemodel-operator: namespaces unknown
])  # fmt: skip
def test_login_uses_the_clients_credentials_through_a_bounded_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, memo: kopf.Memo, limit: int
) -> None:
    # The client reads $KUBECONFIG when imported, and keeps what it loads as its default configuration.
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig(tmp_path)))
    monkeypatch.setattr(kubernetes.client.Configuration, "_default", kubernetes.client.Configuration._default)

    async def logged_in() -> tuple[Any, int, str | None]:
        context = await login(memo=memo, logger=logging.getLogger("test"), settings=kopf.OperatorSettings())
        assert isinstance(context, kopf.AiohttpSession)
        session = context.aiohttp_session
        try:
            return context, session.connector.limit, session.headers.get("Authorization")
        finally:
            await session.close()

    context, pool, authorization = asyncio.run(logged_in())
    assert context.server == "https://127.0.0.1:6443"
    assert authorization == "Bearer s3cret"
    assert pool == limit


def test_a_bounded_session_keeps_the_credentials_and_the_identity() -> None:
    info = kopf.ConnectionInfo(server="https://api:6443", token="t", default_namespace="ns", priority=7, insecure=True)

    async def session() -> tuple[kopf.AiohttpSession, int]:
        context = bounded_session(info, 45)
        try:
            return context, context.aiohttp_session.connector.limit
        finally:
            await context.aiohttp_session.close()

    context, pool = asyncio.run(session())
    assert (context.server, context.default_namespace, context.priority, pool) == ("https://api:6443", "ns", 7, 45)
