"""The ClusterRole that lets ML engineers read the client Secrets the operator issued, kept up to date.

RBAC cannot select Secrets by label or name prefix, so the role named by
:data:`~securemodel.operator.settings.CLIENT_SECRETS_ROLE` (the chart's
``securemodel-ml-engineer-client-secrets``, without rules of its own) gets exactly one rule from
the operator: ``get`` on the names of every client-certificate Secret it issued, in every
namespace it watches (:func:`client_secret_rules`; no rule at all when there is none). A
RoleBinding of the role limits an engineer to one namespace. ``resourceNames`` carry no
namespace, so such a binding also grants ``get`` on a Secret of the same name that the operator
did not issue in that namespace: only names of the form ``<model>-client-<client>`` are ever listed.

One loop per operator process (the leader's) keeps the role: it reads the names from the kopf
index of the models' Secrets (no LIST), and replaces the role's rules under a resourceVersion
precondition only when they differ (:class:`RoleWriter`). It starts with the first watch event
of a SecureModel or a client Secret, since kopf runs those handlers only once every index is
filled (a loop started earlier could see a half-filled index and drop names), then runs on
every change of a client Secret and every :data:`~securemodel.operator.settings.CLIENT_ROLE_RESYNC_SECONDS`,
which also undoes an edit of the role by hand. With no SecureModel and no client Secret in the
watched namespaces it does not start, so names of Secrets deleted while the operator was stopped
stay until a model appears; they name no Secret then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import kopf
import kubernetes

from securemodel.api import GROUP, VERSION
from securemodel.api.secure_model import KIND
from securemodel.operator import kube
from securemodel.operator.runtime import runtime
from securemodel.operator.secure_model.children import CLIENT_LABEL, UID_LABEL
from securemodel.operator.settings import CLIENT_ROLE_RESYNC_SECONDS, CLIENT_ROLE_RETRY_SECONDS, CLIENT_SECRETS_ROLE

logger = logging.getLogger(__name__)

_RULE_KEYS = ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs")


def issued_client_secrets(secrets: Mapping[str, Iterable[Mapping[str, Any]]]) -> frozenset[str]:
    """Names of the client-certificate Secrets in ``secrets`` (the index of Secrets by model uid) that
    a SecureModel issued: labelled as a client's, and controlled by the model whose uid they carry."""
    names = set()
    for uid, stored in secrets.items():
        for secret in stored:
            meta = secret.get("metadata") or {}
            labels = meta.get("labels") or {}
            if CLIENT_LABEL not in labels or labels.get(UID_LABEL) != uid:
                continue
            if any(ref.get("uid") == uid and ref.get("kind") == KIND.kind and ref.get("controller")
                   for ref in meta.get("ownerReferences") or ()):  # fmt: skip
                names.add(str(meta["name"]))
    return frozenset(names)


def client_secret_rules(names: Iterable[str]) -> list[dict[str, Any]]:
    """The role's rules: ``get`` on the Secrets ``names`` (sorted, each once); none without a name."""
    listed = sorted(set(names))
    if not listed:
        return []
    return [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": listed}]


def rules_differ(stored: Iterable[Mapping[str, Any]] | None, desired: list[dict[str, Any]]) -> bool:
    """Whether the role's ``stored`` rules (as read) grant anything else than ``desired``."""
    normal = [{key: rule[key] for key in _RULE_KEYS if rule.get(key)} for rule in stored or ()]
    return normal != desired


class RoleWriter:
    """Replaces the rules of the ClusterRole ``name`` when they differ from the wanted ones (blocking calls)."""

    def __init__(self, client: kubernetes.client.ApiClient, name: str) -> None:
        self._client = client
        self._api = kubernetes.client.RbacAuthorizationV1Api(client)
        self.name = name

    def sync(self, names: Iterable[str]) -> bool:
        """Make the role grant ``get`` on exactly ``names``; whether it now does (False: try again soon).

        The write carries the resourceVersion read, so an edit in between fails (409) rather than
        being overwritten unseen.
        """
        desired = client_secret_rules(names)
        try:
            role = kube.serialize(self._client, self._api.read_cluster_role(self.name))
            if not rules_differ(role.get("rules"), desired):
                return True
            role["rules"] = desired
            self._api.replace_cluster_role(self.name, role, field_manager=kube.FIELD_MANAGER)
        except kubernetes.client.ApiException as error:
            if error.status == 409:
                return False
            why = {403: "the operator may not write it (it must hold get on those Secrets in every namespace)",
                   404: "it does not exist (the chart creates it)"}.get(error.status, f"{error.status} {error.reason}")  # fmt: skip
            logger.warning("ClusterRole %s not updated: %s", self.name, why)
            return False
        logger.info("ClusterRole %s grants get on %d client Secrets", self.name, len(desired[0]["resourceNames"]) if desired else 0)
        return True


class RoleKeeper:
    """The loop that keeps the role: woken by :meth:`notify`, and every resync period."""

    def __init__(self, writer: RoleWriter, secrets: Mapping[str, Iterable[Mapping[str, Any]]]) -> None:
        self._writer = writer
        self._secrets = secrets
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"ClusterRole {writer.name}")

    def notify(self) -> None:
        self._changed.set()

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        kept: frozenset[str] | None = None
        resync = True
        while True:
            self._changed.clear()
            names = issued_client_secrets(self._secrets)
            if resync or names != kept:
                try:
                    done = await asyncio.to_thread(self._writer.sync, names)
                except Exception:  # an API server or connection failure: tried again soon
                    logger.exception("ClusterRole %s not updated", self._writer.name)
                    done = False
                kept = names if done else None
            timeout = CLIENT_ROLE_RESYNC_SECONDS if kept is not None else CLIENT_ROLE_RETRY_SECONDS
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
                resync = False
            except TimeoutError:
                resync = True


if CLIENT_SECRETS_ROLE is not None:

    @kopf.on.event("", "v1", "secrets", labels={CLIENT_LABEL: kopf.PRESENT, UID_LABEL: kopf.PRESENT})
    @kopf.on.event(GROUP, VERSION, KIND.plural)
    async def client_secrets_changed(memo: kopf.Memo, model_secrets: kopf.Index[Any, Any], **_: Any) -> None:
        """Start the role's keeper on the first event (every index is filled by then), and wake it."""
        keeper = memo.get("client_role")
        if keeper is None:
            assert CLIENT_SECRETS_ROLE is not None
            keeper = memo["client_role"] = RoleKeeper(RoleWriter(runtime(memo).client, CLIENT_SECRETS_ROLE), model_secrets)
        keeper.notify()

    @kopf.on.cleanup()
    async def stop_client_role(memo: kopf.Memo, **_: Any) -> None:
        keeper = memo.get("client_role")
        if keeper is not None:
            await keeper.stop()
