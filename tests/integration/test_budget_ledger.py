"""The ledger in a real API server, without the operator: exact under concurrency, commits, admission.

Claims are made here directly with the ledger's own functions, as the operator and the
training stage make them; the ledger does not care whether a consumer object exists.
"""

import asyncio
import json
import subprocess
import threading
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import kubernetes
import pytest

from securemodel.api import GROUP, VERSION
from securemodel.operator.budget.ledger import BudgetNotFound, BudgetRef, submitting
from ledger_support import commit_claim, submit_claim
from securemodel.operator.conditions import Event
from securemodel.operator.budget.directory import BudgetDirectory
from securemodel.operator.budget.writer import LedgerWriter
from securemodel.privacy import BudgetSpec, ClaimState, Consumer, Ledger, LedgerError, submit

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def apply_budget(kubectl: Kubectl, namespace: str, name: str, epsilon: float, policy: str = "fcfs") -> dict[str, Any]:
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PrivacyBudget",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"epsilon": epsilon, "delta": 1e-3, "policy": policy,  # a lifetime δ that 100 claims fit
                 "data": {"sources": ["builtin://wine"]}},
    }
    result = kubectl("apply", "-o", "json", "-f", "-", stdin=json.dumps(manifest))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def read_budget(api_client: kubernetes.client.ApiClient, ref: BudgetRef) -> dict[str, Any]:
    custom = kubernetes.client.CustomObjectsApi(api_client)
    return custom.get_namespaced_custom_object(GROUP, VERSION, ref.namespace, "privacybudgets", ref.name)


def consumer(namespace: str, number: int) -> Consumer:
    return Consumer("SecureModel", namespace, f"m{number}", f"uid-{number}")


def held(status: dict[str, Any]) -> Fraction:
    """Committed + reserved ε summed exactly from the claims themselves, not from the totals."""
    return sum(
        (Fraction(repr(c["epsilon"])) for c in status.get("claims", ()) if c["state"] in ("Reserved", "Committed")),
        Fraction(0),
    )


def assert_never_overcommitted(versions: list[dict[str, Any]]) -> None:
    assert versions, "the watch saw no version of the budget"
    for budget in versions:
        status = budget.get("status") or {}
        assert held(status) <= Fraction(repr(budget["spec"]["epsilon"])), status
        uids = [c["consumer"]["uid"] for c in status.get("claims", ())]
        assert len(uids) == len(set(uids)), f"a uid holds two claims: {uids}"


def test_twenty_concurrent_claimants_on_a_budget_for_five_get_exactly_five(
    api_client: kubernetes.client.ApiClient,
    kubectl: Kubectl,
    namespace: str,
    watch_budget: Callable[..., Any],
) -> None:
    created = apply_budget(kubectl, namespace, "wine", 5.0)
    watch = watch_budget(namespace, "wine", created["metadata"]["resourceVersion"])
    ref = BudgetRef(namespace, "wine")
    start = threading.Barrier(20)
    states: dict[int, list[ClaimState]] = {}

    def claimant(number: int) -> None:
        start.wait()
        # Twice: the second claim of the same uid must change nothing.
        states[number] = [submit_claim(api_client, ref, consumer(namespace, number), 1.0, 1e-5).state for _ in "12"]

    threads = [threading.Thread(target=claimant, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(states) == 20
    granted = [n for n, (first, again) in states.items() if first is ClaimState.RESERVED]
    # The pure rules, given the same twenty identical claims, grant this many (composed, at least five).
    spec, expected = BudgetSpec(5.0, 1e-3), Ledger()
    for number in range(20):
        expected = submit(expected, spec, consumer(namespace, number), 1.0, 1e-5, "t").ledger
    fits = sum(1 for c in expected.claims if c.state is ClaimState.RESERVED)
    assert fits >= 5 and len(granted) == fits
    assert all(first is again for first, again in states.values()), "nothing freed budget in between"
    status = read_budget(api_client, ref)["status"]
    assert sorted(c["state"] for c in status["claims"]) == ["Reserved"] * fits + ["Waiting"] * (20 - fits)
    assert status["epsilonCommitted"] == 0 and status["epsilonReserved"] <= 5.0
    assert status["epsilonReserved"] + status["epsilonAvailable"] == pytest.approx(5.0)
    assert_never_overcommitted(watch.stop())


def test_a_commit_spends_what_was_used_and_grants_the_rest_in_the_same_write(
    api_client: kubernetes.client.ApiClient, kubectl: Kubectl, namespace: str
) -> None:
    apply_budget(kubectl, namespace, "wine", 2.0)
    ref = BudgetRef(namespace, "wine")
    first, second = consumer(namespace, 1), consumer(namespace, 2)
    assert submit_claim(api_client, ref, first, 1.5, 1e-5).state is ClaimState.RESERVED
    assert submit_claim(api_client, ref, second, 1.0, 1e-5).state is ClaimState.WAITING
    with pytest.raises(LedgerError, match="only a Reserved claim can be committed"):
        commit_claim(api_client, ref, second.uid, 0.5)
    with pytest.raises(LedgerError, match="between 0 and the 1.5 reserved"):
        commit_claim(api_client, ref, first.uid, 1.6)

    committed = commit_claim(api_client, ref, first.uid, 1.0)
    assert (committed.state, committed.epsilon) == (ClaimState.COMMITTED, 1.0)
    status = read_budget(api_client, ref)["status"]
    assert [c["state"] for c in status["claims"]] == ["Committed", "Reserved"]
    assert status["epsilonCommitted"] == pytest.approx(1.0, abs=0.01) and status["epsilonCommitted"] <= 1.0
    assert status["epsilonCommitted"] + status["epsilonReserved"] <= 2.0 == status["epsilonSummed"]
    assert commit_claim(api_client, ref, first.uid, 1.0) == committed, "committing again changes nothing"


def test_a_claim_on_a_missing_budget_fails(api_client: kubernetes.client.ApiClient, namespace: str) -> None:
    with pytest.raises(BudgetNotFound):
        submit_claim(api_client, BudgetRef(namespace, "absent"), consumer(namespace, 1), 1.0, 1e-5)
    with pytest.raises(BudgetNotFound):
        commit_claim(api_client, BudgetRef(namespace, "absent"), "uid-1", 1.0)


def test_the_writer_batches_concurrent_changes_into_few_transactions(
    api_client: kubernetes.client.ApiClient, kubectl: Kubectl, namespace: str
) -> None:
    apply_budget(kubectl, namespace, "wine", 10.0)
    ref = BudgetRef(namespace, "wine")
    posted: list[tuple[Event, ...]] = []

    async def claim_all() -> list[Any]:
        writer = LedgerWriter(kubernetes.client.CustomObjectsApi(api_client), lambda _, events: posted.append(events),
                              BudgetDirectory())
        changes = [submitting(consumer(namespace, n), 0.25, 1e-5) for n in range(40)]
        return await asyncio.gather(*(writer.apply(ref, change) for change in changes))

    ledgers = asyncio.run(claim_all())
    granted = [event for events in posted for event in events if event.reason == "ClaimGranted"]
    assert len(granted) == 40
    assert len(posted) < 10, f"{len(posted)} transactions for 40 claims"
    assert [ledger.claim(f"uid-{n}").state for n, ledger in enumerate(ledgers)] == [ClaimState.RESERVED] * 40
    status = read_budget(api_client, ref)["status"]
    assert status["epsilonSummed"] == 10 and 0 <= status["epsilonAvailable"] == pytest.approx(10 - status["epsilonReserved"])


def test_epsilon_cannot_be_lowered_below_what_the_ledger_holds(
    api_client: kubernetes.client.ApiClient, kubectl: Kubectl, namespace: str, wait_for: Callable[..., Any]
) -> None:
    apply_budget(kubectl, namespace, "wine", 5.0)
    ref = BudgetRef(namespace, "wine")
    submit_claim(api_client, ref, consumer(namespace, 1), 2.0, 1e-5)
    commit_claim(api_client, ref, "uid-1", 2.0)
    submit_claim(api_client, ref, consumer(namespace, 2), 1.0, 1e-5)

    def lowered(epsilon: float, *extra: str) -> subprocess.CompletedProcess[str]:
        manifest = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "PrivacyBudget",
            "metadata": {"name": "wine", "namespace": namespace},
            "spec": {"epsilon": epsilon, "delta": 1e-3, "policy": "fcfs", "data": {"sources": ["builtin://wine"]}},
        }
        return kubectl("apply", *extra, "-f", "-", stdin=json.dumps(manifest))

    # The policy is enforced once the API server has loaded it (a fresh cluster takes a moment).
    wait_for(lambda: lowered(2.5, "--dry-run=server").returncode != 0, what="the admission policy to be enforced")
    refused = lowered(2.5)
    assert refused.returncode != 0
    assert "spec.epsilon may not be lowered below the ε the ledger holds: 1.99" in refused.stderr  # composed
    assert read_budget(api_client, ref)["spec"]["epsilon"] == 5
    for allowed in (3.0, 8.0, 3.0):
        result = lowered(allowed)
        assert result.returncode == 0, result.stderr
    assert read_budget(api_client, ref)["spec"]["epsilon"] == 3
