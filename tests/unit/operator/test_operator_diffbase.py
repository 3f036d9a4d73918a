"""kopf's record of the configuration last handled: kept and diffed for PrivacyBudgets only, built without copying
the ledger."""

import copy
from typing import Any

import kopf

from securemodel.api import GROUP
from securemodel.operator.settings import DiffBaseOfChangeHandlers

STORAGE = DiffBaseOfChangeHandlers(frozenset({"PrivacyBudget"}))
LAST_HANDLED = f"{GROUP}/last-handled-configuration"


def budget(epsilon: float, claims: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "PrivacyBudget",
        "metadata": {
            "name": "breast-cancer",
            "namespace": "clinic-a",
            "uid": "u-1",
            "resourceVersion": str(1000 + claims),
            "labels": {"team": "oncology"},
            "annotations": {"owner": "data-steward", LAST_HANDLED: '{"spec":{"epsilon":1}}'},
            "finalizers": [f"{GROUP}/finalizer"],
            "managedFields": [{"manager": "securemodel-operator", "fieldsV1": {"f:status": {f"k:{i}": {} for i in range(claims)}}}],
        },
        "spec": {"epsilon": epsilon, "delta": 1e-5, "policy": "fcfs", "data": [{"source": "pvc://records"}]},
        "status": {"ledger": [{"consumer": f"m-{i}", "epsilon": 1.0, "state": "Reserved"} for i in range(claims)]},
    }


def test_a_budgets_essence_is_kopfs_own() -> None:
    body = kopf.Body(budget(10.0, 1000))
    stock = kopf.AnnotationsDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    built = STORAGE.build(body=body)
    assert built == stock.build(body=body)
    assert built == {"spec": budget(10.0, 0)["spec"], "metadata": {"labels": {"team": "oncology"}, "annotations": {"owner": "data-steward"}}}


def test_a_budgets_spec_change_is_a_change_and_its_ledger_is_not() -> None:
    before = STORAGE.build(body=kopf.Body(budget(10.0, 3)))
    assert STORAGE.build(body=kopf.Body(budget(10.0, 900))) == before
    assert STORAGE.build(body=kopf.Body(budget(12.0, 3))) != before


def test_the_body_is_left_as_it_was() -> None:
    raw = budget(10.0, 5)
    kept = copy.deepcopy(raw)
    STORAGE.build(body=kopf.Body(raw))
    assert raw == kept


def test_a_model_has_no_configuration_to_diff_or_store() -> None:
    raw = {"apiVersion": f"{GROUP}/v1alpha1", "kind": "SecureModel", "metadata": {"name": "m", "namespace": "n"},
           "spec": {"privacy": {"budgetRef": "b"}}, "status": {"phase": "Training"}}  # fmt: skip
    body = kopf.Body(raw)
    assert STORAGE.fetch(body=body) == STORAGE.build(body=body) == {}
    patch = kopf.Patch()
    STORAGE.store(body=body, patch=patch, essence=STORAGE.build(body=body))
    assert not patch
