"""deploy/ is accepted by the API server, and the operator's pod meets Pod Security "restricted"."""

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import kubernetes
import yaml

REPO = Path(__file__).resolve().parents[2]
Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def test_every_deploy_manifest_passes_server_side_validation(kubectl: Kubectl) -> None:
    for path in sorted((REPO / "deploy").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            # Dry-run each object on its own, in a namespace that exists, so nothing is changed.
            if document["metadata"].get("namespace"):
                document["metadata"]["namespace"] = "default"
            result = kubectl("apply", "--dry-run=server", "-f", "-", stdin=json.dumps(document))
            assert result.returncode == 0, f"{path.name}: {result.stderr}"
            assert "Warning" not in result.stderr, f"{path.name}: {result.stderr}"


def test_the_operator_pod_is_admitted_under_the_restricted_profile(
    kubectl: Kubectl, api_client: kubernetes.client.ApiClient, namespace: str
) -> None:
    documents = list(yaml.safe_load_all((REPO / "deploy" / "20-operator.yaml").read_text()))
    template = next(d for d in documents if d["kind"] == "Deployment")["spec"]["template"]
    core = kubernetes.client.CoreV1Api(api_client)
    core.patch_namespace(namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    core.create_namespaced_service_account(namespace, {"metadata": {"name": template["spec"]["serviceAccountName"]}})
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "operator", **template["metadata"]}}
    pod["spec"] = template["spec"]
    result = kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-", stdin=json.dumps(pod))
    assert result.returncode == 0, result.stderr
    assert "PodSecurity" not in result.stderr

    privileged = json.loads(json.dumps(pod))
    privileged["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    refused = kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-", stdin=json.dumps(privileged))
    assert refused.returncode != 0 and 'violates PodSecurity "restricted' in refused.stderr
