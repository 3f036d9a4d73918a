"""A SecureModel end to end on the real cluster: the operator runs in-cluster from its image (deploy/),
trains with DP-SGD, compresses, and serves over mutual TLS; clients call it from pods.

The operator is deploy/'s, shared by the end-to-end modules (conftest.py's ``operator`` fixture). The
model's namespace enforces Pod Security ``restricted``: every pod the operator creates must meet it or
it would not be admitted.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from securemodel.crypto.pki import CertifiedKey, issue_client_certificate, new_ca
from e2e_support import (
    SERVED_CLIENT,
    condition,
    get,
    pod_result,
    restricted_namespace,
    start_client,
    wait_ready,
    wait_until,
)
from test_cluster import apply, kubectl, logs, pod, wait_phase

pytestmark = pytest.mark.e2e

MODEL = "tumor"
CLIENT = "frontend"
CLIENT_SECRET = f"{MODEL}-client-{CLIENT}"
SPEC: dict[str, Any] = {
    "model": {"architecture": "mlp", "params": {"hidden": [32]}},
    "data": {"source": "builtin://breast_cancer", "evaluation": {"source": "builtin://breast_cancer?part=evaluation"}},
    "privacy": {"budgetRef": "breast-cancer", "epsilon": 2.0, "delta": 1.0e-5, "maxGradNorm": 1.0, "accountant": "prv"},
    "training": {"epochs": 3, "batchSize": 64, "learningRate": 0.5, "optimizer": "sgd", "seed": 0},
    "compression": {"pruning": {"sparsity": 0.5}, "quantization": "int8"},
    "serving": {"replicas": 1, "clients": [CLIENT], "certificateLifetime": "720h"},
    "resources": {"gpus": 0, "cpu": "1", "memory": "2Gi"},
}


@pytest.fixture(scope="module")
def namespace(operator: None) -> Iterator[str]:
    with restricted_namespace("e2e-sm") as name:
        yield name


@pytest.fixture(scope="module")
def served(namespace: str) -> dict[str, Any]:
    """The example-like model, applied with its budget and waited on until Ready."""
    budget = {"apiVersion": "securemodel.io/v1alpha1", "kind": "PrivacyBudget", "metadata": {"name": "breast-cancer"},
              "spec": {"epsilon": 10.0, "delta": 1.0e-5, "data": {"sources": ["builtin://breast_cancer"]}}}  # fmt: skip
    model = {"apiVersion": "securemodel.io/v1alpha1", "kind": "SecureModel", "metadata": {"name": MODEL}, "spec": SPEC}
    apply(namespace, budget, model)
    return wait_ready(namespace, "securemodel", MODEL, 420, "the SecureModel to be Ready")


def secret_bytes(namespace: str, name: str, key: str) -> bytes:
    return base64.b64decode(get(namespace, "secret", name)["data"][key])


def bad_certificates(namespace: str) -> dict[str, Any]:
    """A client certificate from another CA, and an expired one from the model's own CA."""
    now = datetime.now(UTC)
    other_ca = new_ca("other", namespace, now=now, lifetime=timedelta(days=30))
    other = issue_client_certificate(other_ca, CLIENT, now=now, lifetime=timedelta(days=1))
    ca = CertifiedKey(secret_bytes(namespace, f"{MODEL}-ca", "tls.crt"), secret_bytes(namespace, f"{MODEL}-ca", "tls.key"))
    expired = issue_client_certificate(ca, CLIENT, now=now - timedelta(days=2), lifetime=timedelta(hours=1))
    data = {"other.crt": other.cert_pem, "other.key": other.key_pem,
            "expired.crt": expired.cert_pem, "expired.key": expired.key_pem}  # fmt: skip
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bad-certificates"},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()}}  # fmt: skip


def test_the_model_is_trained_compressed_and_served_with_the_contracts_status(served: dict[str, Any], namespace: str) -> None:
    status = served["status"]
    assert status["phase"] == "Serving"
    assert status["observedGeneration"] == served["metadata"]["generation"]
    for kind, reason in [("BudgetReserved", "Committed"), ("Trained", "Succeeded"), ("Compressed", "Succeeded"),
                         ("Ready", "Serving")]:  # fmt: skip
        found = condition(served, kind)
        assert (found.get("status"), found.get("reason")) == ("True", reason), found
        assert found["observedGeneration"] == served["metadata"]["generation"]
    privacy, model = status["privacy"], status["model"]
    assert 0 < privacy["epsilonSpent"] <= SPEC["privacy"]["epsilon"]
    assert privacy["delta"] == SPEC["privacy"]["delta"] and privacy["accountant"] == "prv"
    assert privacy["noiseMultiplier"] > 0 and 0 < privacy["sampleRate"] < 1 and privacy["steps"] > 0
    assert model["digest"].startswith("sha256:")
    assert 0 < model["compressedSizeBytes"] < model["sizeBytes"]
    assert model["sparsity"] == pytest.approx(0.5, abs=0.05)
    assert 0.5 < model["accuracy"] <= 1 and 0.5 < model["compressedAccuracy"] <= 1
    assert status["endpoint"] == f"https://{MODEL}.{namespace}.svc:8443"
    assert status["servingVersion"] == status["version"]
    # The key material is in Secrets only, never in the status.
    key = secret_bytes(namespace, f"{MODEL}-data-key", "data.key")
    assert len(key) == 32 and base64.b64encode(key).decode() not in json.dumps(served)


def test_the_budget_ledger_holds_the_committed_spend(served: dict[str, Any], namespace: str) -> None:
    budget = get(namespace, "privacybudget", "breast-cancer")
    (claim,) = budget["status"]["claims"]
    assert claim["consumer"]["uid"] == served["metadata"]["uid"] and claim["consumer"]["version"]
    assert claim["state"] == "Committed"
    assert claim["epsilon"] == pytest.approx(served["status"]["privacy"]["epsilonSpent"], rel=1e-12)
    # The budget composes the claim's DP-SGD mechanism (the run's σ, q and steps) with the PLD accountant.
    assert claim["mechanism"]["type"] == "DPSGD" and claim["mechanism"]["steps"] == served["status"]["privacy"]["steps"]
    assert budget["status"]["epsilonCommitted"] == pytest.approx(claim["epsilon"], rel=1e-3)
    assert budget["status"]["epsilonSummed"] == claim["epsilon"]


def test_an_ml_engineer_may_read_the_models_client_secrets_and_no_key_secret(served: dict[str, Any], namespace: str) -> None:
    """The operator keeps securemodel-ml-engineer-client-secrets: get on exactly the client Secrets it issued."""
    kubectl("-n", namespace, "create", "rolebinding", "max", "--clusterrole=securemodel-ml-engineer", "--user=max")

    def may(secret: str) -> str:
        return kubectl("auth", "can-i", "get", f"secret/{secret}", "-n", namespace, "--as=max", check=False).stdout.strip()

    wait_until(lambda: may(f"{MODEL}-client-{CLIENT}") == "yes", 120, "the client Secret in the ML engineer's role")
    assert [may(f"{MODEL}-{key}") for key in ("data-key", "ca", "tls")] == ["no", "no", "no"]


def test_inference_over_mtls_matches_the_reported_accuracy_and_bad_certificates_are_refused(
    served: dict[str, Any], namespace: str
) -> None:
    apply(namespace, bad_certificates(namespace))
    url = f"https://{MODEL}.{namespace}.svc:8443"
    start_client(namespace, "client", CLIENT_SECRET, SERVED_CLIENT, url, MODEL, SPEC["data"]["source"], "other", "expired",
                 bad_secret="bad-certificates")  # fmt: skip
    result = pod_result(namespace, "client", 240)
    assert result["accuracy"] == pytest.approx(served["status"]["model"]["compressedAccuracy"], abs=1e-9)
    assert result["examples"] > 100
    assert result["no_certificate"], "a client without a certificate was served"
    assert result["other"], "a client certificate from another CA was accepted"
    assert result["expired"], "an expired client certificate was accepted"


WATCH_CODE = r"""
import hashlib, http.client, json, ssl, sys, time
host, model, seconds, watched = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
context = ssl.create_default_context(cafile="/client/ca.crt")
context.load_cert_chain("/client/tls.crt", "/client/tls.key")
body = json.dumps({"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": [0.0] * 30}]})
first, ok, failures, errors = None, 0, 0, []
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    try:
        connection = http.client.HTTPSConnection(host, 8443, context=context, timeout=10)
        connection.connect()
        certificate = hashlib.sha256(connection.sock.getpeercert(binary_form=True)).hexdigest()
        connection.request("POST", f"/v2/models/{model}/infer", body, {"Content-Type": "application/json"})
        response = connection.getresponse(); answer = response.read(); connection.close()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
        seen = certificate if watched == "certificate" else json.loads(answer)["model_version"]
    except Exception as error:
        if first is None:  # the Service may not route yet
            time.sleep(0.5); continue
        failures += 1; errors.append(repr(error)); time.sleep(0.2); continue
    ok += 1
    if first is None:
        first = seen
        print("FIRST " + seen, flush=True)
    elif seen != first:
        print("RESULT " + json.dumps({"changed": True, "first": first, "last": seen, "ok": ok, "failures": failures,
                                      "errors": errors[:3]}))
        sys.exit(0)
    time.sleep(0.2)
print("RESULT " + json.dumps({"changed": False, "first": first, "ok": ok, "failures": failures, "errors": errors[:3]}))
"""


def first_answered(namespace: str, name: str) -> None:
    wait_until(lambda: "FIRST" in kubectl("-n", namespace, "logs", name, check=False).stdout, 90,
               "the first answer")  # fmt: skip


REVOKED_CODE = r"""
import http.client, json, ssl, sys, time
host, model, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
context = ssl.create_default_context(cafile="/client/ca.crt")
context.load_cert_chain("/bad/tls.crt", "/bad/tls.key")  # a copy of a certificate the operator issued
body = json.dumps({"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": [0.0] * 30}]})
answered, deadline = False, time.monotonic() + seconds
while time.monotonic() < deadline:
    try:
        connection = http.client.HTTPSConnection(host, 8443, context=context, timeout=10)
        connection.request("POST", f"/v2/models/{model}/infer", body, {"Content-Type": "application/json"})
        response = connection.getresponse(); response.read(); connection.close(); status = response.status
    except Exception as error:
        status = repr(error)
    if status == 200 and not answered:
        answered = True; print("FIRST", flush=True)
    elif status != 200 and answered:
        print("RESULT " + json.dumps({"refusedAt": time.time(), "status": status})); sys.exit(0)
    time.sleep(0.5)
print("RESULT " + json.dumps({"refusedAt": None, "answered": answered}))
"""


def copied_client(namespace: str, client: str, name: str) -> None:
    """A Secret holding a copy of the certificate and key the operator issued to ``client`` now."""
    secret = f"{MODEL}-client-{client}"
    data = {key: base64.b64encode(secret_bytes(namespace, secret, key)).decode() for key in ("tls.crt", "tls.key")}
    apply(namespace, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": data})


def refused_within(namespace: str, pod_name: str, since: float, seconds: float) -> None:
    """The copied certificate the pod ``pod_name`` uses was answered before ``since`` and refused (403) within ``seconds``."""
    result = pod_result(namespace, pod_name, 240)
    assert result["refusedAt"] is not None, f"the revoked certificate is still answered: {result}"
    assert result["status"] == 403, result
    assert result["refusedAt"] - since <= seconds, f"refused only {result['refusedAt'] - since:.0f} s after revocation"


def test_a_forced_rotation_revokes_every_earlier_certificate_within_a_minute(served: dict[str, Any], namespace: str) -> None:
    old = secret_bytes(namespace, f"{MODEL}-tls", "tls.crt")
    copied_client(namespace, CLIENT, "before-rotation")
    host = f"{MODEL}.{namespace}.svc"
    start_client(namespace, "rotated-out", CLIENT_SECRET, REVOKED_CODE, host, MODEL, "200", bad_secret="before-rotation")
    first_answered(namespace, "rotated-out")
    rotated = time.time()
    kubectl("-n", namespace, "annotate", "--overwrite", f"securemodel/{MODEL}",
            f"securemodel.io/rotate-certificates={uuid.uuid4().hex[:8]}")  # fmt: skip
    wait_until(lambda: secret_bytes(namespace, f"{MODEL}-tls", "tls.crt") != old, 60, "a new server certificate")
    refused_within(namespace, "rotated-out", rotated, 90)
    # A client that reads its Secret after the rotation is answered.
    start_client(namespace, "rotated-in", CLIENT_SECRET, WATCH_CODE, host, MODEL, "20", "certificate")
    result = pod_result(namespace, "rotated-in", 120)
    assert result["ok"] > 1 and result["failures"] == 0, result


def test_changing_serving_reconciles_clients_without_retraining(served: dict[str, Any], namespace: str) -> None:
    def jobs() -> list[str]:
        return kubectl("-n", namespace, "get", "jobs", "-o", "name").stdout.split()

    before = jobs()
    patch = {"spec": {"serving": {"clients": [CLIENT, "batch"]}}}
    kubectl("-n", namespace, "patch", f"securemodel/{MODEL}", "--type=merge", "-p", json.dumps(patch))
    wait_until(lambda: kubectl("-n", namespace, "get", f"secret/{MODEL}-client-batch", check=False).returncode == 0,
               60, "the new client's Secret")  # fmt: skip
    # A copy of the client's certificate, kept by whoever held it, is answered until the client is removed.
    wait_until(lambda: "batch" in allow_listed(namespace), 60, "the new client in the serving pods' allow-list")
    copied_client(namespace, "batch", "batch-copy")
    host = f"{MODEL}.{namespace}.svc"
    start_client(namespace, "removed-client", CLIENT_SECRET, REVOKED_CODE, host, MODEL, "200", bad_secret="batch-copy")
    first_answered(namespace, "removed-client")
    removed = time.time()
    patch = {"spec": {"serving": {"clients": [CLIENT]}}}
    kubectl("-n", namespace, "patch", f"securemodel/{MODEL}", "--type=merge", "-p", json.dumps(patch))
    wait_until(lambda: kubectl("-n", namespace, "get", f"secret/{MODEL}-client-batch", check=False).returncode != 0,
               60, "the removed client's Secret deleted")  # fmt: skip
    refused_within(namespace, "removed-client", removed, 90)
    model = wait_until(lambda: (lambda m: m if m["status"]["observedGeneration"] == m["metadata"]["generation"]
                                and condition(m, "Ready").get("status") == "True" else None)(
                                    get(namespace, "securemodel", MODEL)), 60, "the change observed")  # fmt: skip
    assert jobs() == before, "a serving change started a Job"
    assert model["status"]["model"]["digest"] == served["status"]["model"]["digest"]


def allow_listed(namespace: str) -> str:
    """The allow-list the serving pods read (the ConfigMap the operator keeps)."""
    found = kubectl("-n", namespace, "get", f"configmap/{MODEL}-allow-list", "-o", "json", check=False)
    return json.dumps(json.loads(found.stdout).get("data") or {}) if found.returncode == 0 else ""


def test_a_deployment_scaled_by_hand_and_an_edited_service_are_put_back(served: dict[str, Any], namespace: str) -> None:
    kubectl("-n", namespace, "scale", f"deployment/{MODEL}", "--replicas=0")
    patch = {"spec": {"ports": [{"name": "https", "port": 9999, "targetPort": "https"}]}}
    kubectl("-n", namespace, "patch", f"service/{MODEL}", "--type=merge", "-p", json.dumps(patch))

    def restored() -> bool:
        deployment = get(namespace, "deployment", MODEL)
        ports = {p["name"]: p["port"] for p in get(namespace, "service", MODEL)["spec"]["ports"]}
        return deployment["spec"]["replicas"] == SPEC["serving"]["replicas"] and ports.get("https") == 8443

    wait_until(restored, 60, "the Deployment's replicas and the Service's port restored")
    wait_until(lambda: condition(get(namespace, "securemodel", MODEL), "Ready").get("status") == "True", 120,
               "the model Ready again")  # fmt: skip


def test_a_new_training_version_takes_over_while_the_old_one_keeps_answering(
    served: dict[str, Any], namespace: str
) -> None:
    """More epochs: a new claim, training, compression and rollout; the old version answers until the new one does."""
    before = get(namespace, "securemodel", MODEL)
    old = before["status"]["servingVersion"]
    assert old == before["status"]["version"]
    host = f"{MODEL}.{namespace}.svc"
    start_client(namespace, "retraining", CLIENT_SECRET, WATCH_CODE, host, MODEL, "480", "version")
    first_answered(namespace, "retraining")
    patch = {"spec": {"training": {"epochs": SPEC["training"]["epochs"] + 1}}}
    kubectl("-n", namespace, "patch", f"securemodel/{MODEL}", "--type=merge", "-p", json.dumps(patch))

    def retraining() -> dict[str, Any] | None:
        model = get(namespace, "securemodel", MODEL)
        return model if model["status"].get("version") not in (None, old) else None

    during = wait_until(retraining, 60, "the new version under way")
    assert condition(during, "Ready").get("status") == "True", "the old version stopped counting as serving"
    result = pod_result(namespace, "retraining", 540)
    assert result["changed"] and result["first"] == old, result
    assert result["failures"] == 0, result
    after = wait_until(lambda: (lambda m: m if m["status"].get("servingVersion") == result["last"] else None)(
        get(namespace, "securemodel", MODEL)), 60, "the new version reported as serving")  # fmt: skip
    status = after["status"]
    assert status["version"] == status["servingVersion"] != old and status["phase"] == "Serving"
    assert {kind: condition(after, kind)["reason"] for kind in ("BudgetReserved", "Trained", "Compressed", "Ready")} == {
        "BudgetReserved": "Committed", "Trained": "Succeeded", "Compressed": "Succeeded", "Ready": "Serving"}  # fmt: skip
    assert status["model"]["digest"] != before["status"]["model"]["digest"]
    # Two versions, two claims, both spent: the budget charges both trainings.
    claims = get(namespace, "privacybudget", "breast-cancer")["status"]["claims"]
    assert [c["state"] for c in claims] == ["Committed", "Committed"]
    assert claims[1]["epsilon"] == pytest.approx(status["privacy"]["epsilonSpent"], rel=1e-12)
    assert claims[0]["epsilon"] == pytest.approx(before["status"]["privacy"]["epsilonSpent"], rel=1e-12)


def served_artifact(namespace: str) -> str:
    """The path of the artifact the serving Deployment serves (its --artifact argument)."""
    deployment = json.loads(kubectl("-n", namespace, "get", f"deployment/{MODEL}", "-o", "json").stdout)
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    return command[command.index("--artifact") + 1]


def artifact_pod(name: str, code: str, *args: str) -> dict[str, Any]:
    """A pod that runs Python ``code`` on the model's artifacts volume, as the worker's user."""
    found = pod(name, ["python", "-c", code, *args],
                volumes=[{"name": "a", "persistentVolumeClaim": {"claimName": f"{MODEL}-artifacts"}}],
                container={"volumeMounts": [{"name": "a", "mountPath": "/artifacts"}]})  # fmt: skip
    found["spec"]["securityContext"] = {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                        "fsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}}  # fmt: skip
    found["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    return found


def restart_serving_until_refused(namespace: str) -> dict[str, Any]:
    """Delete the serving pods; wait until their successors refuse the artifact (Ready False, ArtifactRejected)."""
    kubectl("-n", namespace, "delete", "pod", "-l", "securemodel.io/component=serve", "--wait=false")

    def refused() -> dict[str, Any] | None:
        ready = condition(get(namespace, "securemodel", MODEL), "Ready")
        return ready if ready.get("reason") == "ArtifactRejected" else None

    ready = wait_until(refused, 120, "Ready False with reason ArtifactRejected")
    assert ready["status"] == "False" and "exited 1" in ready["message"]
    slices = json.loads(kubectl("-n", namespace, "get", "endpointslices", "-l", f"kubernetes.io/service-name={MODEL}",
                                "-o", "json").stdout)["items"]  # fmt: skip
    ready_endpoints = [e for s in slices for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready")]
    assert ready_endpoints == [], "a pod that refused its artifact never listens, so nothing answers"
    return ready


def test_an_older_versions_artifact_copied_over_the_served_one_is_refused(served: dict[str, Any], namespace: str) -> None:
    """Artifacts are bound (GCM associated data) to the model's uid, versions and encoding, and the serving pods
    check the digest the operator recorded: the previous version's genuine artifact, under the same key, is refused."""
    path = served_artifact(namespace)
    code = ("import glob, shutil, sys; current = sys.argv[1]; "
            "older = sorted(p for p in glob.glob('/artifacts/*/*.compressed.smdl') if p != current); "
            "shutil.copyfile(current, current + '.kept'); shutil.copyfile(older[0], current); print('copied', older[0])")  # fmt: skip
    apply(namespace, artifact_pod("swap", code, path))
    wait_phase(namespace, "swap", "Succeeded")
    assert "copied /artifacts/" in logs(namespace, "swap")
    ready = restart_serving_until_refused(namespace)
    assert "sha256:" in ready["message"] or "was written for" in ready["message"], ready["message"]
    # The genuine artifact put back, the model serves again.
    apply(namespace, artifact_pod("restore", "import shutil, sys; shutil.move(sys.argv[1] + '.kept', sys.argv[1])", path))
    wait_phase(namespace, "restore", "Succeeded")
    kubectl("-n", namespace, "delete", "pod", "-l", "securemodel.io/component=serve", "--wait=false")
    wait_until(lambda: condition(get(namespace, "securemodel", MODEL), "Ready").get("reason") == "Serving", 180,
               "the model serving its genuine artifact again")  # fmt: skip


def test_a_tampered_artifact_makes_serving_fail_with_a_clear_condition(served: dict[str, Any], namespace: str) -> None:
    """Flip one byte of the compressed artifact on the PVC, then restart the serving pod."""
    path = served_artifact(namespace)
    code = ("import sys; p = sys.argv[1]; b = bytearray(open(p, 'rb').read()); b[-1] ^= 1; "
            "open(p, 'wb').write(bytes(b)); print('tampered', len(b))")  # fmt: skip
    apply(namespace, artifact_pod("tamper", code, path))
    wait_phase(namespace, "tamper", "Succeeded")
    ready = restart_serving_until_refused(namespace)
    assert "sha256:" in ready["message"] or "authentic" in ready["message"].lower(), ready["message"]


def test_a_spec_change_mid_training_lets_the_training_finish_and_charges_it_before_the_new_version(
    namespace: str,
) -> None:
    """Its pod may have read the data: the running version trains to its end and is committed, then the next claims."""
    name = "changed"
    # Its own data (a second budget over breast_cancer would share the first one's data, and neither would grant).
    spec = {**SPEC, "privacy": {**SPEC["privacy"], "budgetRef": "changing", "epsilon": 1.0},
            "data": {"source": "builtin://wine"},
            "training": {**SPEC["training"], "epochs": 60}, "serving": {"replicas": 0}}  # fmt: skip
    budget = {"apiVersion": "securemodel.io/v1alpha1", "kind": "PrivacyBudget", "metadata": {"name": "changing"},
              "spec": {"epsilon": 5.0, "delta": 1.0e-5, "data": {"sources": ["builtin://wine"]}}}  # fmt: skip
    apply(namespace, budget, {"apiVersion": "securemodel.io/v1alpha1", "kind": "SecureModel",
                              "metadata": {"name": name}, "spec": spec})  # fmt: skip
    uid = get(namespace, "securemodel", name)["metadata"]["uid"]
    wait_until(lambda: train_running(namespace, uid), 180, "the train container running")
    first_job = kubectl("-n", namespace, "get", "jobs", "-l", f"securemodel.io/model-uid={uid}", "-o", "name").stdout.split()
    patch = {"spec": {"training": {"epochs": 61}}}
    kubectl("-n", namespace, "patch", f"securemodel/{name}", "--type=merge", "-p", json.dumps(patch))
    note = wait_until(lambda: (lambda r: r if "runs to its end and is charged" in r.get("message", "") else None)(
        condition(get(namespace, "securemodel", name), "Ready")), 60, "the model saying the change waits")  # fmt: skip
    assert note["status"] == "False"  # nothing serves this model yet

    def states() -> list[str] | None:
        found = [c["state"] for c in get(namespace, "privacybudget", "changing")["status"].get("claims", [])]
        return found if len(found) == 2 and found[1] in ("Reserved", "Committed") else None

    assert wait_until(states, 300, "the first training charged and the new version's claim granted")[0] == "Committed"
    (job,) = first_job
    finished = json.loads(kubectl("-n", namespace, "get", job, "-o", "json").stdout)["status"]
    assert finished.get("succeeded") == 1, "the first version's training was cut short"
    kubectl("-n", namespace, "delete", f"securemodel/{name}", "--timeout=60s")
    claims = get(namespace, "privacybudget", "changing")["status"]["claims"]
    assert [c["state"] for c in claims][0] == "Committed" and claims[1]["state"] in ("Committed", "Released")


def train_running(namespace: str, uid: str) -> bool:
    """Whether a train container of the model with ``uid`` is running."""
    pods = json.loads(kubectl("-n", namespace, "get", "pods", "-l", f"securemodel.io/model-uid={uid},"
                              "securemodel.io/component=train", "-o", "json").stdout)["items"]  # fmt: skip
    return any((s.get("state") or {}).get("running") for p in pods for s in p["status"].get("containerStatuses", []))


def test_deleting_a_model_whose_training_touched_the_data_commits_its_claim(namespace: str) -> None:
    """The claim of a model deleted mid-training is committed (whole claim: it may have run every step), never released."""
    name = "interrupted"
    spec = {**SPEC, "privacy": {**SPEC["privacy"], "epsilon": 1.0}, "training": {**SPEC["training"], "epochs": 200},
            "data": {"source": "builtin://digits"}, "serving": {"replicas": 0}}  # fmt: skip
    budget = {"apiVersion": "securemodel.io/v1alpha1", "kind": "PrivacyBudget", "metadata": {"name": "interruptible"},
              "spec": {"epsilon": 5.0, "delta": 1.0e-5, "data": {"sources": ["builtin://digits"]}}}  # fmt: skip
    spec["privacy"]["budgetRef"] = "interruptible"
    apply(namespace, budget, {"apiVersion": "securemodel.io/v1alpha1", "kind": "SecureModel",
                              "metadata": {"name": name}, "spec": spec})  # fmt: skip
    uid = get(namespace, "securemodel", name)["metadata"]["uid"]
    wait_until(lambda: train_running(namespace, uid), 180, "the train container running")
    kubectl("-n", namespace, "delete", f"securemodel/{name}", "--timeout=60s")
    claims = get(namespace, "privacybudget", "interruptible")["status"]["claims"]
    (claim,) = [c for c in claims if c["consumer"]["uid"] == uid]
    assert claim["state"] == "Committed"
    assert claim["epsilon"] == pytest.approx(1.0)
