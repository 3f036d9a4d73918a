"""The chart on the real cluster, with the Helm built for it: install, upgrade, uninstall, install again.

The module takes over from the operator `kubectl apply -f deploy/` installed (deploy/ is rendered
from this chart): it removes that install but the CRDs, which hold every custom resource and which
the release adopts (Helm's ownership labels and annotations), then drives Helm the way a user
does. It leaves deploy/'s install back for the modules after it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from e2e_support import OPERATOR, condition, get, restricted_namespace, wait_until
from test_cluster import KUBECONFIG, REPO, apply, kubectl
from test_secure_model import SPEC

pytestmark = pytest.mark.e2e

HELM = REPO / ".cluster" / "bin" / "helm"
CHART = REPO / "charts" / "securemodel-operator"
RELEASE, SYSTEM = "securemodel-operator", "securemodel-system"
LOCAL_IMAGES = ["--set", "image.tag=dev", "--set", "image.pullPolicy=Never", "--set", "worker.image.tag=dev"]
CRDS = ["privacybudgets.securemodel.io", "securemodels.securemodel.io", "federatedrounds.securemodel.io"]


def helm(*args: str, timeout: float = 400) -> str:
    result = subprocess.run([str(HELM), f"--kubeconfig={KUBECONFIG}", *args], capture_output=True, text=True,
                            timeout=timeout, check=False)  # fmt: skip
    assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def adopt_crds() -> None:
    """Mark the CRDs as the release's (Helm adopts an existing object that carries its ownership metadata)."""
    for crd in CRDS:
        kubectl("label", "--overwrite", "crd", crd, "app.kubernetes.io/managed-by=Helm")
        kubectl("annotate", "--overwrite", "crd", crd, f"meta.helm.sh/release-name={RELEASE}",
                f"meta.helm.sh/release-namespace={SYSTEM}")  # fmt: skip


def operator_pods() -> set[str]:
    """The operator's pods that are not terminating."""
    found = kubectl(*OPERATOR, "get", "pods", "-l", "app.kubernetes.io/name=securemodel-operator", "-o", "json")
    return {p["metadata"]["name"] for p in json.loads(found.stdout)["items"] if not p["metadata"].get("deletionTimestamp")}


@pytest.fixture(scope="module")
def released() -> Iterator[None]:
    """The operator installed by ``helm install`` from the working tree, in place of deploy/'s."""
    for part in ("20-operator", "30-admission", "15-roles", "10-rbac"):
        kubectl("delete", "-f", str(REPO / "deploy" / f"{part}.yaml"), "--ignore-not-found", "--wait=true", check=False)
    helm("uninstall", RELEASE, "-n", SYSTEM, "--ignore-not-found", "--wait", "--timeout=3m")  # an interrupted run's
    adopt_crds()
    helm("install", RELEASE, str(CHART), "-n", SYSTEM, *LOCAL_IMAGES, "--wait", "--timeout=5m")
    yield
    helm("uninstall", RELEASE, "-n", SYSTEM, "--wait", "--timeout=3m")
    kubectl("apply", "-f", str(REPO / "deploy"))


@pytest.fixture(scope="module")
def namespace(released: None) -> Iterator[str]:
    with restricted_namespace("e2e-helm") as name:
        yield name


def serving(namespace: str) -> dict[str, Any] | None:
    model = get(namespace, "securemodel", "m")
    return model if condition(model, "Ready").get("reason") == "Serving" else None


def test_install_upgrade_uninstall_and_install_again_keep_the_model_serving(namespace: str) -> None:
    assert json.loads(helm("status", RELEASE, "-n", SYSTEM, "-o", "json"))["info"]["status"] == "deployed"
    helm("test", RELEASE, "-n", SYSTEM, "--timeout=3m")  # the chart's own check: the operator answers, CRDs established
    apply(namespace, {"apiVersion": "securemodel.io/v1alpha1", "kind": "PrivacyBudget", "metadata": {"name": "b"},
                      "spec": {"epsilon": 5.0, "data": {"sources": [SPEC["data"]["source"]]}}})  # fmt: skip
    spec = {**SPEC, "privacy": {**SPEC["privacy"], "budgetRef": "b"}, "training": {**SPEC["training"], "epochs": 1}}
    apply(namespace, {"apiVersion": "securemodel.io/v1alpha1", "kind": "SecureModel", "metadata": {"name": "m"}, "spec": spec})
    before = wait_until(lambda: serving(namespace), 420, "the model served by the Helm-installed operator")
    deployment = get(namespace, "deployment", "m")["metadata"]["generation"]

    # An upgrade that changes a value rolls the operator; the model keeps serving, untouched.
    old_pods = operator_pods()
    helm("upgrade", RELEASE, str(CHART), "-n", SYSTEM, *LOCAL_IMAGES, "--set", "resources.requests.cpu=60m",
         "--wait", "--timeout=5m")  # fmt: skip
    wait_until(lambda: operator_pods() and not operator_pods() & old_pods, 120, "the operator rolled")
    assert serving(namespace) is not None and get(namespace, "deployment", "m")["metadata"]["generation"] == deployment

    # Uninstall keeps the CRDs and every custom resource (and the model's children keep serving).
    helm("uninstall", RELEASE, "-n", SYSTEM, "--wait", "--timeout=3m")
    for crd in CRDS:
        assert kubectl("get", "crd", crd).returncode == 0, f"{crd} was deleted with the release"
    assert get(namespace, "securemodel", "m")["metadata"]["uid"] == before["metadata"]["uid"]
    assert get(namespace, "privacybudget", "b")["status"]["claims"]
    assert get(namespace, "deployment", "m")["status"].get("availableReplicas")

    # A new install adopts the kept CRDs and reconciles on: a serving change is carried out.
    helm("install", RELEASE, str(CHART), "-n", SYSTEM, *LOCAL_IMAGES, "--wait", "--timeout=5m")
    kubectl("-n", namespace, "patch", "securemodel/m", "--type=merge", "-p", json.dumps({"spec": {"serving": {"replicas": 2}}}))
    wait_until(lambda: get(namespace, "deployment", "m")["spec"]["replicas"] == 2, 120, "the reinstalled operator at work")
    assert get(namespace, "securemodel", "m")["metadata"]["uid"] == before["metadata"]["uid"]
