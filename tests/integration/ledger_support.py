"""One ledger transaction from a test, as the operator writes it (no Events): claim, commit what was spent, or
give the claim back."""

import kubernetes

from securemodel.operator.budget.ledger import BudgetRef, Change, committing, releasing, submitting, transact
from securemodel.privacy import Claim, Consumer, LedgerError


def _run(client: kubernetes.client.ApiClient, ref: BudgetRef, change: Change, key: str) -> Claim:
    transaction = transact(kubernetes.client.CustomObjectsApi(client), ref, [change])
    (result,) = transaction.results
    if isinstance(result, ValueError):
        raise result
    claim = transaction.ledger.claim(key)
    if claim is None:
        raise LedgerError(f"no claim with key {key}")
    return claim


def submit_claim(client: kubernetes.client.ApiClient, ref: BudgetRef, consumer: Consumer, epsilon: float, delta: float) -> Claim:
    """Claim (``epsilon``, ``delta``) for ``consumer``; the claim as stored (idempotent per key)."""
    return _run(client, ref, submitting(consumer, epsilon, delta), consumer.key)


def commit_claim(client: kubernetes.client.ApiClient, ref: BudgetRef, key: str, epsilon_spent: float) -> Claim:
    """Commit ``epsilon_spent`` of the claim with ``key``; the Committed claim."""
    return _run(client, ref, committing(key, epsilon_spent), key)


def release_claim(client: kubernetes.client.ApiClient, ref: BudgetRef, key: str) -> Claim:
    """Give back the Reserved claim with ``key``; the Released claim."""
    return _run(client, ref, releasing(key), key)
