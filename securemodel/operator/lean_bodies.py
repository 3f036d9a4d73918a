"""kopf's copies of the objects it watches, without their ``metadata.managedFields``.

The API server sends every object with its managed fields, its record of which client set which field: about
half of a SecureModel's JSON. Nothing in kopf or in the operator reads them (the operator's indexes already
leave them out, :func:`securemodel.operator.kube.indexed`), yet kopf keeps the latest body of every object it
serves for as long as the object lives (each model's daemon holds its model's), and each watch event's body
until the object's worker has handled it: in a burst of models, thousands of bodies at once.

kopf parses those bodies in two places, and both drop the managed fields here, right after parsing:

* the lines of a watch stream, parsed by ``kopf._cogs.clients.api.stream`` with that module's ``json.loads``:
  :func:`install` gives the module a ``json`` whose ``loads`` is :func:`loads`. That reaches into kopf, so a
  unit test reads ``stream``'s source and fails if kopf stops parsing its lines that way (the bodies would
  then keep their managed fields: more memory, nothing wrong);
* the answers to its other requests (the first listing of each resource, the answers to its patches),
  parsed by ``aiohttp.ClientResponse.json``: :class:`LeanResponse` is the response class of the session the
  operator hands kopf (:func:`securemodel.operator.connections.bounded_session`).

Only the managed fields go; every other field of every object is as the API server sent it.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from kopf._cogs.clients import api as kopf_api


def without_managed_fields(document: Any) -> Any:
    """``document`` (an object, a list of objects, or a watch event of one) with each object's
    ``metadata.managedFields`` removed in place; anything else is returned as it is."""
    if not isinstance(document, dict):
        return document
    items = document.get("items")
    for obj in (document, document.get("object"), *(items if isinstance(items, list) else ())):
        metadata = obj.get("metadata") if isinstance(obj, dict) else None
        if isinstance(metadata, dict):
            metadata.pop("managedFields", None)
    return document


def loads(text: str | bytes, **kwargs: Any) -> Any:
    """``json.loads``, then :func:`without_managed_fields`."""
    return without_managed_fields(json.loads(text, **kwargs))


class _KopfJson:
    """The ``json`` kopf's API module sees once :func:`install` ran: the standard module, but :func:`loads`."""

    loads = staticmethod(loads)

    def __getattr__(self, name: str) -> Any:
        return getattr(json, name)


def install() -> None:
    """Make kopf's watch streams parse their lines with :func:`loads` (idempotent).

    Raises RuntimeError if kopf's API module no longer uses the standard ``json`` module, whose replacement
    this would then silently miss or break.
    """
    current = kopf_api.json
    if isinstance(current, _KopfJson):
        return
    if current is not json:
        raise RuntimeError(f"kopf._cogs.clients.api.json is {current!r}, not the json module: review lean_bodies")
    kopf_api.json = _KopfJson()  # type: ignore[assignment]


class LeanResponse(aiohttp.ClientResponse):
    """An aiohttp response whose ``json()`` drops the managed fields of the objects it holds."""

    async def json(self, *args: Any, **kwargs: Any) -> Any:
        return without_managed_fields(await super().json(*args, **kwargs))
