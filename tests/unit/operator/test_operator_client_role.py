"""The rules of the client-Secrets ClusterRole, from the index of the models' Secrets (pure)."""

from __future__ import annotations

from typing import Any

import asyncio
import subprocess
import sys
from datetime import UTC, datetime

from securemodel.operator.secure_model import children
from securemodel.operator.secure_model import client_role
from securemodel.operator.secure_model.client_role import client_secret_rules, issued_client_secrets, rules_differ
from securemodel.operator.secure_model.keys import wanted_secrets
from securemodel.operator.secure_model.spec import parse

NOW = datetime(2026, 11, 26, tzinfo=UTC)


def model_secrets(owner: children.Owner, *clients: str) -> list[dict[str, Any]]:
    spec = parse({"model": {"architecture": "mlp"}, "data": {"source": "builtin://breast_cancer"},
                  "privacy": {"budgetRef": "b", "epsilon": 1.0}, "serving": {"clients": list(clients)}})  # fmt: skip
    return [write.body for write in wanted_secrets(owner, spec, {}, NOW)]


A = children.Owner("tumor", "clinic-a", "uid-a")
B = children.Owner("tumor", "clinic-b", "uid-b")
C = children.Owner("spam", "clinic-b", "uid-c")


def test_the_names_of_every_issued_client_secret_of_every_model() -> None:
    index = {"uid-a": model_secrets(A, "frontend", "batch"), "uid-b": model_secrets(B, "frontend"), "uid-c": model_secrets(C)}
    assert issued_client_secrets(index) == {"tumor-client-frontend", "tumor-client-batch"}
    index["uid-c"] = model_secrets(C, "x")
    assert issued_client_secrets(index) == {"tumor-client-frontend", "tumor-client-batch", "spam-client-x"}


def test_a_secret_the_operator_did_not_issue_is_never_listed() -> None:
    (client,) = [s for s in model_secrets(A, "frontend") if children.CLIENT_LABEL in s["metadata"]["labels"]]
    meta = client["metadata"]
    forged_uid = {**client, "metadata": {**meta, "name": "db-password"}}  # labelled with A's uid, owned by nobody
    forged_uid["metadata"]["ownerReferences"] = []
    other_owner = {**client, "metadata": {**meta, "name": "stolen", "ownerReferences": [
        {**meta["ownerReferences"][0], "uid": "uid-z"}]}}  # fmt: skip
    not_controller = {**client, "metadata": {**meta, "name": "weak", "ownerReferences": [
        {**meta["ownerReferences"][0], "controller": False}]}}  # fmt: skip
    other_kind = {**client, "metadata": {**meta, "name": "job-owned", "ownerReferences": [
        {**meta["ownerReferences"][0], "kind": "Job"}]}}  # fmt: skip
    unlabelled = {**client, "metadata": {**meta, "name": "plain", "labels": {children.UID_LABEL: "uid-a"}}}
    index = {"uid-a": [forged_uid, other_owner, not_controller, other_kind, unlabelled]}
    assert issued_client_secrets(index) == frozenset()
    assert issued_client_secrets({"uid-b": [client]}) == frozenset(), "indexed under another model's uid"
    assert issued_client_secrets({"uid-a": [client]}) == {"tumor-client-frontend"}


def test_the_rules_grant_get_by_name_and_nothing_without_a_name() -> None:
    assert client_secret_rules([]) == []
    assert client_secret_rules(["b", "a", "b"]) == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["a", "b"]}
    ]


def test_the_role_is_written_only_when_its_rules_grant_something_else() -> None:
    desired = client_secret_rules(["a", "b"])
    assert not rules_differ(desired, desired)
    assert not rules_differ(None, []) and not rules_differ([], [])
    assert rules_differ(None, desired)
    assert rules_differ(client_secret_rules(["a"]), desired)
    assert rules_differ([{**desired[0], "resourceNames": ["b", "a"]}], desired)
    extra = [*desired, {"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}]
    assert rules_differ(extra, desired), "a rule added by hand is taken out"
    assert rules_differ([{**desired[0], "verbs": ["get", "list"]}], desired)
    assert rules_differ(desired, [])
    # The API server's own empty fields are not a difference.
    assert not rules_differ([{**desired[0], "nonResourceURLs": None}], desired)


class Recorded:
    """A role writer that records what it was asked to grant (the first ``failures`` attempts fail)."""

    name = "role"

    def __init__(self, failures: int = 0) -> None:
        self.calls: list[frozenset[str]] = []
        self.failures = failures

    def sync(self, names: frozenset[str]) -> bool:
        self.calls.append(frozenset(names))
        if self.failures:
            self.failures -= 1
            return False
        return True


def test_the_keeper_writes_on_change_retries_a_failure_and_resyncs(monkeypatch: Any) -> None:
    monkeypatch.setattr(client_role, "CLIENT_ROLE_RETRY_SECONDS", 0.05)
    monkeypatch.setattr(client_role, "CLIENT_ROLE_RESYNC_SECONDS", 0.3)
    index: dict[str, list[dict[str, Any]]] = {"uid-a": model_secrets(A, "frontend")}

    async def scenario() -> Recorded:
        writer = Recorded(failures=1)
        keeper = client_role.RoleKeeper(writer, index)  # type: ignore[arg-type]
        await asyncio.sleep(0.15)  # the first sync fails, the retry succeeds
        assert writer.calls == [{"tumor-client-frontend"}] * 2
        keeper.notify()  # nothing changed: no call
        await asyncio.sleep(0.05)
        assert len(writer.calls) == 2
        index["uid-b"] = model_secrets(B, "batch")
        keeper.notify()
        await asyncio.sleep(0.05)
        assert writer.calls[-1] == {"tumor-client-frontend", "tumor-client-batch"} and len(writer.calls) == 3
        await asyncio.sleep(0.4)  # a resync re-reads the role even though nothing changed
        await keeper.stop()
        return writer

    writer = asyncio.run(scenario())
    assert len(writer.calls) >= 4


def test_the_handlers_are_defined_only_with_a_role_to_keep() -> None:
    code = "import securemodel.operator.main as m; print(hasattr(m.client_role, 'client_secrets_changed'))"
    def run(env: dict[str, str]) -> str:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**env, "PATH": "/usr/bin:/bin"}).stdout.strip()  # fmt: skip
    assert run({}) == "False"
    assert run({"SECUREMODEL_CLIENT_SECRETS_ROLE": "securemodel-ml-engineer-client-secrets"}) == "True"
