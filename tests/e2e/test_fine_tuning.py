"""Public pretraining, then private fine-tuning, on the real cluster: examples/finetune/public-pretraining.yaml.

The public model trains without differential privacy on the half of the data no budget of the namespace
covers and claims nothing; the private model starts from its authenticated weights and fine-tunes them
with DP-SGD on the budget's half, under the only claim the budget records. A public model over data the
budget protects trains nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from e2e_support import condition, get, restricted_namespace, wait_ready, wait_until
from test_cluster import REPO, apply, kubectl

pytestmark = pytest.mark.e2e

EXAMPLE = REPO / "examples" / "finetune" / "public-pretraining.yaml"
PRETRAINED, PRIVATE = "tumor-classifier-pretrained", "tumor-classifier-private"


@pytest.fixture(scope="module")
def namespace(operator: None) -> Iterator[str]:
    """The example applied unchanged but for its namespace."""
    with restricted_namespace("e2e-ft") as name:
        for document in yaml.safe_load_all(EXAMPLE.read_text(encoding="utf-8")):
            document["metadata"]["namespace"] = name
            apply(name, document)
        yield name


def train_result(namespace: str, model: str) -> dict[str, Any]:
    """The result the model's succeeded train pod wrote to its termination message."""
    pods = json.loads(kubectl("-n", namespace, "get", "pods", "-o", "json", "-l",
                              f"securemodel.io/model={model},securemodel.io/component=train").stdout)["items"]  # fmt: skip
    (pod,) = [p for p in pods if p["status"].get("phase") == "Succeeded"]
    (state,) = [s["state"]["terminated"] for s in pod["status"]["containerStatuses"] if s["name"] == "train"]
    return dict(json.loads(state["message"]))


def test_the_private_model_fine_tunes_the_public_one_and_only_it_is_charged(namespace: str) -> None:
    private = wait_ready(namespace, "securemodel", PRIVATE, 900, "the private fine-tuning to be Ready")
    pretrained = get(namespace, "securemodel", PRETRAINED)
    assert pretrained["status"]["privacy"]["public"] is True and "epsilonSpent" not in pretrained["status"]["privacy"]
    assert condition(pretrained, "PublicData")["status"] == "True"
    public_result = train_result(namespace, PRETRAINED)
    assert public_result["public"] is True and "noiseMultiplier" not in public_result

    spent = private["status"]["privacy"]["epsilonSpent"]
    assert 0 < spent <= 1.0
    claims = get(namespace, "privacybudget", "breast-cancer")["status"]["claims"]
    assert [(c["consumer"]["name"], c["state"]) for c in claims] == [(PRIVATE, "Committed")]
    assert claims[0]["epsilon"] == pytest.approx(spent)
    result = train_result(namespace, PRIVATE)
    # it started from the public model's trained artifact, accepted only with the digest that model's pod reported
    assert result["init"]["digest"] == public_result["digest"], result["init"]
    assert result["frozenParameters"] == 0 and result["trainableParameters"] > 0
    # both read only public data for their accuracy; fine-tuning keeps the public model's skill at ε ≤ 1
    assert 0.8 < private["status"]["model"]["accuracy"] <= 1, private["status"]["model"]
    print(f"public {pretrained['status']['model']['accuracy']:.3f}, private fine-tuned {private['status']['model']['accuracy']:.3f} "
          f"at ε {spent:.3f}")  # fmt: skip


def test_a_public_model_over_the_budgets_data_trains_nothing(namespace: str) -> None:
    apply(namespace, {"apiVersion": "securemodel.io/v1alpha1", "kind": "SecureModel", "metadata": {"name": "leak"},
                      "spec": {"model": {"architecture": "mlp"}, "data": {"source": "builtin://breast_cancer"},
                               "privacy": {"public": True}, "serving": {"replicas": 0}}})  # fmt: skip

    def refused() -> dict[str, Any] | None:
        found = condition(get(namespace, "securemodel", "leak"), "PublicData")
        return found if found.get("reason") == "DataProtected" else None

    refusal = wait_until(refused, 120, "PublicData False with DataProtected")
    assert refusal["status"] == "False" and "breast-cancer" in refusal["message"], refusal
    jobs = json.loads(kubectl("-n", namespace, "get", "jobs", "-l", "securemodel.io/model=leak", "-o", "json").stdout)
    assert jobs["items"] == []
    claims = get(namespace, "privacybudget", "breast-cancer")["status"]["claims"]
    assert all(c["consumer"]["name"] != "leak" for c in claims)
