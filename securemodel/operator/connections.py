"""kopf's connections to the API server: as many as its watch streams, plus a bounded pool for requests.

kopf's own session sets no connection limit, so every request in flight opens a TLS connection
of its own, and asyncio gives each TLS connection a 256 KiB read buffer. A burst of models makes
each new model's finalizer, progress and status patches at once: at 300 models kopf held about
200 connections, 49 MiB of buffers at the operator's peak memory (measured with memray). On two
cores, more requests in flight than :data:`REQUEST_CONNECTIONS` only queue at the API server.

The login handler below logs in as kopf does by default (the Kubernetes client's in-cluster or
kubeconfig credentials) and hands kopf a session whose pool holds every watch stream kopf opens
plus :data:`REQUEST_CONNECTIONS`: a watch stream holds its connection for as long as it runs, so a
pool without room for all of them would starve requests for ever. Where the streams cannot be
counted in advance (namespace patterns that kopf resolves at run time), the pool is unbounded,
as kopf's own.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Final

import aiohttp
import kopf

from securemodel.operator.lean_bodies import LeanResponse

# Connections for requests (patches, reads, Events) besides the watch streams.
REQUEST_CONNECTIONS: Final = 32
# Streams kopf runs besides one per watched resource and namespace: CustomResourceDefinitions
# (resource discovery) and Namespaces (namespace discovery).
DISCOVERY_STREAMS: Final = 2
_PATTERN_CHARACTERS: Final = frozenset("*?[!,")  # kopf's globs, exclusions and lists of them


def watched_resources(registry: kopf.OperatorRegistry) -> int:
    """How many resource selectors kopf watches for ``registry``: what it indexes, watches, spawns daemons for
    or handles changes of (kopf's own union, ``revise_resources``; its registries are not public)."""
    selectors = (
        registry._indexing.get_all_selectors()
        | registry._watching.get_all_selectors()
        | registry._spawning.get_all_selectors()
        | registry._changing.get_all_selectors()
    )
    return len(selectors)


def connection_limit(resources: int, namespaces: Collection[str]) -> int:
    """The pool size for ``resources`` watched in ``namespaces`` (empty: cluster-wide); 0 (no limit) when a
    namespace is a pattern, whose matches, each with its own streams, are known only at run time."""
    if any(_PATTERN_CHARACTERS & set(namespace) for namespace in namespaces):
        return 0
    return resources * max(1, len(namespaces)) + DISCOVERY_STREAMS + REQUEST_CONNECTIONS


def bounded_session(info: kopf.ConnectionInfo, limit: int) -> kopf.AiohttpSession:
    """kopf's session for ``info`` (the same TLS context, headers and proxy) with at most ``limit`` connections,
    whose answers' objects come without their managed fields (:class:`~securemodel.operator.lean_bodies.LeanResponse`)."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, ssl=info.as_ssl_context()),
        response_class=LeanResponse,
        headers=info.as_http_headers(),
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(
        server=info.server,
        default_namespace=info.default_namespace,
        priority=info.priority,
        expiration=info.expiration,
        aiohttp_session=session,
    )


def served(namespaces: Collection[str]) -> kopf.Memo:
    """The memo ``kopf.run`` starts with when serving ``namespaces`` (empty: all), for :func:`login`."""
    return kopf.Memo(namespaces=tuple(namespaces))


@kopf.on.login()
async def login(memo: kopf.Memo, **kwargs: Any) -> kopf.AiohttpSession | None:
    """Log in with the Kubernetes client's credentials, as kopf does by default, through a pool bounded for the
    namespaces in ``memo`` (:func:`served`; unbounded when kopf was started without them)."""
    info = kopf.login_via_client(memo=memo, **kwargs)
    if info is None:
        return None
    namespaces = memo.get("namespaces")
    limit = 0 if namespaces is None else connection_limit(watched_resources(kopf.get_default_registry()), namespaces)
    return bounded_session(info, limit)
