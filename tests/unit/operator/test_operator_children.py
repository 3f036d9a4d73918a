"""The children a SecureModel owns: deterministic names, restricted pods, no secret on a command line."""

import argparse
import base64
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from securemodel.crypto.pki import issued_by, renewal_due
from securemodel.data.sources import Evaluation
from securemodel.operator.conditions import Progress
from securemodel.operator.secure_model import children, keys, outcomes
from securemodel.operator.secure_model.decide import Snapshot, serve_failure
from securemodel.operator.secure_model.jobs import JobPhase, job_view, pod_view
from securemodel.operator.secure_model.spec import ModelSpecs, parse
from securemodel.workers import cli

OWNER = children.Owner("tumor", "clinic-a", "1234-uid")
RAW: dict[str, Any] = {
    "model": {"architecture": "mlp", "params": {"hidden": [8]}},
    "data": {"source": "builtin://breast_cancer"},
    "privacy": {"budgetRef": "b", "epsilon": 2.0, "delta": 1e-5, "maxGradNorm": 1.0, "accountant": "prv"},
    "training": {"epochs": 2, "batchSize": 64, "learningRate": 0.1, "optimizer": "sgd", "seed": 3},
    "compression": {"pruning": {"sparsity": 0.5}, "quantization": "int8"},
    "serving": {"replicas": 2, "clients": ["frontend", "batch"], "certificateLifetime": "720h"},
    "resources": {"gpus": 0, "cpu": "1", "memory": "2Gi"},
}
SPEC = parse(RAW)
RUN = children.Run(noise_multiplier=1.25, sample_rate=0.140969, steps=15)
DIGEST = "sha256:" + "ab" * 32


def spec_with(**parts: Any) -> ModelSpecs:
    return parse({**RAW, **parts})
NOW = datetime(2026, 11, 21, tzinfo=UTC)


def pods_of(spec: ModelSpecs = SPEC) -> list[dict[str, Any]]:
    versions = spec.versions
    return [
        children.train_job(OWNER, spec, versions.training, RUN, "img")["spec"]["template"]["spec"],
        children.compress_job(OWNER, spec, versions, "img")["spec"]["template"]["spec"],
        children.deployment(OWNER, spec, versions, "img", DIGEST)["spec"]["template"]["spec"],
    ]


def worker_args(pod: dict[str, Any]) -> argparse.Namespace:
    """The pod's command as the worker parses it (the real parser: a flag it does not know fails here)."""
    command = pod["containers"][0]["command"]
    assert command[0] == "securemodel-worker"
    return cli.build_parser().parse_args(command[1:])


def test_every_worker_command_parses_and_binds_the_artifacts_to_the_model_and_its_versions() -> None:
    versions = SPEC.versions
    train, compress, serve = (worker_args(pod) for pod in pods_of())
    assert (train.command, compress.command, serve.command) == ("train", "compress", "serve")
    assert train.model_uid == compress.model_uid == serve.model_uid == OWNER.uid
    assert train.training_version == compress.training_version == serve.training_version == versions.training
    assert compress.model_version == serve.model_version == versions.version
    assert serve.artifact_digest == DIGEST and str(serve.artifact) == str(compress.output)
    assert str(compress.input) == str(train.output)


def test_names_are_deterministic_and_the_versions_ignore_serving_and_resources() -> None:
    versions = SPEC.versions
    assert versions == parse(json.loads(json.dumps(RAW))).versions
    assert spec_with(serving={"replicas": 5}, resources={"gpus": 1}).versions == versions
    retrained = spec_with(training={**RAW["training"], "epochs": 3}).versions
    assert retrained.training != versions.training and retrained.version != versions.version
    job = children.train_job(OWNER, SPEC, versions.training, RUN, "img")
    assert job["metadata"]["name"] == f"tumor-train-{versions.training}"
    compress = children.compress_job(OWNER, SPEC, versions, "img")
    assert compress["metadata"]["name"] == f"tumor-compress-{versions.version}"
    assert children.deployment(OWNER, SPEC, versions, "img")["metadata"]["name"] == "tumor"
    assert children.service(OWNER)["metadata"]["name"] == "tumor"
    assert children.artifacts_pvc(OWNER, "1Gi")["metadata"]["name"] == "tumor-artifacts"
    assert children.endpoint("tumor", "clinic-a") == "https://tumor.clinic-a.svc:8443"


def test_a_compression_change_compresses_the_same_training_again_into_a_new_file() -> None:
    versions = SPEC.versions
    recompressed = spec_with(compression={"pruning": {"sparsity": 0.8}, "quantization": "int8"}).versions
    assert recompressed.training == versions.training and recompressed.version != versions.version

    def flags(job: dict[str, Any]) -> dict[str, str]:
        args = job["spec"]["template"]["spec"]["containers"][0]["command"]
        return {args[i]: args[i + 1] for i in range(2, len(args) - 1, 2)}

    first, second = (flags(children.compress_job(OWNER, SPEC, v, "img")) for v in (versions, recompressed))
    assert first["--input"] == second["--input"] == f"/artifacts/{versions.training}/model.smdl"
    assert first["--output"] != second["--output"]  # no artifact is ever overwritten
    served = children.deployment(OWNER, SPEC, recompressed, "img")["spec"]["template"]
    assert served["metadata"]["labels"][children.VERSION_LABEL] == recompressed.version
    assert second["--output"] in served["spec"]["containers"][0]["command"]


def test_the_longest_child_name_is_a_valid_label_value() -> None:
    from securemodel.api.secure_model import NAME_MAX_LENGTH

    versions = SPEC.versions
    longest = children.compress_job_name("m" * NAME_MAX_LENGTH, versions.version)
    assert len(longest) == 63  # Jobs label their pods with their name: at most 63 characters


def test_every_child_is_owned_by_the_model() -> None:
    versions = SPEC.versions
    objects = [
        children.train_job(OWNER, SPEC, versions.training, RUN, "img"),
        children.compress_job(OWNER, SPEC, versions, "img"),
        children.deployment(OWNER, SPEC, versions, "img"),
        children.service(OWNER),
        children.artifacts_pvc(OWNER, "1Gi"),
        *(write.body for write in keys.wanted_secrets(OWNER, SPEC, {}, NOW)),
    ]
    for obj in objects:
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref["uid"] == OWNER.uid and ref["kind"] == "SecureModel" and ref["controller"]
        assert obj["metadata"]["labels"][children.UID_LABEL] == OWNER.uid


@pytest.mark.parametrize("index", [0, 1, 2])
def test_pods_meet_the_restricted_profile(index: int) -> None:
    pod = pods_of()[index]
    security = pod["securityContext"]
    assert security["runAsNonRoot"] and security["runAsUser"] == security["runAsGroup"] == 65532
    assert security["fsGroup"] == 65532 and security["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["readOnlyRootFilesystem"] is True
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        assert container["imagePullPolicy"] == "IfNotPresent"
        assert "privileged" not in context
    for volume in pod["volumes"]:
        assert "hostPath" not in volume


def test_the_train_job_runs_once_with_exactly_the_calibrated_run() -> None:
    version = SPEC.versions.training
    job = children.train_job(OWNER, SPEC, version, RUN, "img")
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    args = pod["containers"][0]["command"]
    flag = {args[i]: args[i + 1] for i in range(2, len(args) - 1, 2)}
    assert float(flag["--noise-multiplier"]) == RUN.noise_multiplier
    assert float(flag["--sample-rate"]) == RUN.sample_rate
    assert int(flag["--steps"]) == RUN.steps
    assert flag["--output"] == f"/artifacts/{version}/model.smdl"
    assert flag["--data-key-file"] == "/var/run/securemodel/keys/data.key"
    assert flag["--device"] == "cpu"
    assert json.loads(flag["--params"]) == {"hidden": [8]}


def test_gpus_map_to_nvidia_gpu_request_and_limit() -> None:
    spec = spec_with(resources={"gpus": 2, "cpu": "4", "memory": "8Gi"})
    container = pods_of(spec)[0]["containers"][0]
    wanted = {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "2"}
    assert container["resources"] == {"requests": wanted, "limits": wanted}
    assert "cuda" in container["command"]
    assert "nvidia.com/gpu" not in json.dumps(pods_of()[0])


def test_a_pvc_source_mounts_its_claim_read_only_at_data() -> None:
    spec = spec_with(data={"source": "pvc://datasets/x/train.npz", "samples": 100})
    pod = pods_of(spec)[0]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "datasets", "readOnly": True}} in pod["volumes"]
    assert {"name": "data", "mountPath": "/data", "readOnly": True} in pod["containers"][0]["volumeMounts"]
    assert not [v for v in pods_of(spec)[1]["volumes"] if v["name"] == "data"], "compression never mounts the data"


def test_the_compress_job_evaluates_on_the_public_source_only_when_there_is_one() -> None:
    versions = SPEC.versions
    none = worker_args(children.compress_job(OWNER, SPEC, versions, "img")["spec"]["template"]["spec"])
    assert none.evaluation_source is None
    public = Evaluation("builtin://breast_cancer?part=evaluation")
    builtin = worker_args(children.compress_job(OWNER, SPEC, versions, "img", public)["spec"]["template"]["spec"])
    assert (builtin.evaluation_source, builtin.evaluation_samples) == (public.source, None)

    spec = spec_with(data={"source": "pvc://clinic/x/train.npz", "samples": 100})
    job = children.compress_job(OWNER, spec, spec.versions, "img", Evaluation("pvc://public/eval.npz", 40))
    pod = job["spec"]["template"]["spec"]
    args = worker_args(pod)
    assert (args.evaluation_source, args.evaluation_samples, str(args.data_root)) == ("pvc://public/eval.npz", 40, "/data")
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "public", "readOnly": True}} in pod["volumes"]
    assert {"name": "data", "mountPath": "/data", "readOnly": True} in pod["containers"][0]["volumeMounts"]
    assert not [v for v in pod["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == "clinic"]


def test_no_key_material_in_any_command_or_environment() -> None:
    secrets = [write.body for write in keys.wanted_secrets(OWNER, SPEC, {}, NOW)]
    values = [base64.b64decode(v) for s in secrets for v in s["data"].values()]
    text = json.dumps(pods_of())
    for value in values:
        for chunk in (value[:16], base64.b64encode(value)[:16]):
            assert chunk.decode(errors="replace") not in text
    for pod in pods_of():
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            assert all("valueFrom" not in env for env in container["env"])


def test_key_secrets_are_created_once_and_renewed_when_due() -> None:
    writes = keys.wanted_secrets(OWNER, SPEC, {}, NOW)
    names = sorted(w.body["metadata"]["name"] for w in writes)
    assert names == ["tumor-ca", "tumor-client-batch", "tumor-client-frontend", "tumor-data-key", "tumor-tls"]
    assert not any(w.replace for w in writes)
    stored = {w.body["metadata"]["name"]: w.body for w in writes}
    assert len(children.secret_bytes(stored["tumor-data-key"], "data.key") or b"") == 32
    assert keys.wanted_secrets(OWNER, SPEC, stored, NOW + timedelta(hours=1)) == []
    later = NOW + timedelta(hours=500)  # less than a third of 720h left
    renewed = keys.wanted_secrets(OWNER, SPEC, stored, later)
    assert sorted(w.body["metadata"]["name"] for w in renewed) == ["tumor-client-batch", "tumor-client-frontend", "tumor-tls"]
    assert all(w.replace for w in renewed)
    ca = keys.load_ca(stored["tumor-ca"])
    assert ca is not None
    for write in renewed:
        cert = children.secret_bytes(write.body, "tls.crt") or b""
        assert issued_by(cert, ca) and not renewal_due(cert, later, timedelta(hours=720))
        assert children.secret_bytes(write.body, "ca.crt") == ca.cert_pem
    forced = keys.wanted_secrets(OWNER, SPEC, stored, NOW, force_renewal=True)
    assert len(forced) == 3
    rotated = keys.wanted_secrets(OWNER, SPEC, stored, NOW, rotation="r1")
    assert len(rotated) == 3 and all(w.body["metadata"]["annotations"] == {keys.ROTATION_ANNOTATION: "r1"} for w in rotated)
    stored.update({w.body["metadata"]["name"]: w.body for w in rotated})
    assert keys.wanted_secrets(OWNER, SPEC, stored, NOW, rotation="r1") == []


def test_removed_clients_secrets_are_listed_for_deletion() -> None:
    stored = [w.body for w in keys.wanted_secrets(OWNER, SPEC, {}, NOW)]
    spec = spec_with(serving={"clients": ["frontend"]})
    assert keys.removed_clients(OWNER, spec, stored) == ["tumor-client-batch"]


def _pod(container: str, **state: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "status": {"containerStatuses": [{"name": container, "state": state}]}}


def test_job_view_reads_the_workers_result_and_whether_a_container_ran() -> None:
    result = {"kind": "TrainResult", "status": "Succeeded", "steps": 10}
    pod = _pod("train", terminated={"exitCode": 0, "startedAt": "t", "message": json.dumps(result) + "\n"})
    done = job_view({"metadata": {"name": "j"}, "status": {"succeeded": 1}}, [pod_view(pod, "train", "TrainResult")])
    assert done.phase is JobPhase.SUCCEEDED and done.result == result and done.ran
    creating = pod_view(_pod("train", waiting={"reason": "ContainerCreating"}), "train", "TrainResult")
    pending = job_view({"metadata": {"name": "j"}, "status": {"active": 1}}, [creating])
    assert pending.phase is JobPhase.PENDING and not pending.ran
    running = pod_view(_pod("train", running={}), "train", "TrainResult")
    assert job_view({"metadata": {"name": "j"}, "status": {"active": 1}}, [running]).phase is JobPhase.RUNNING
    # The kubelet's synthetic status for a container it never started is not a run.
    unknown = _pod("train", terminated={"exitCode": 137, "reason": "ContainerStatusUnknown"})
    assert not pod_view(unknown, "train", "TrainResult").ran
    pull = _pod("train", waiting={"reason": "ErrImageNeverPull", "message": "image not present"})
    assert "ErrImageNeverPull" in pod_view(pull, "train", "TrainResult").image_failure
    init_ran = {"metadata": {"name": "p"}, "status": {"initContainerStatuses": [{"name": "prepare", "containerID": "c://1",
                                                                                   "state": {"terminated": {"exitCode": 0}}}]}}
    assert pod_view(init_ran, "train", "TrainResult").ran  # an init container runs the same image


def test_serving_is_ready_only_with_all_replicas_available_and_reports_crashes() -> None:
    deployment = {"metadata": {"name": "tumor", "generation": 2},
                  "status": {"observedGeneration": 2, "updatedReplicas": 2, "availableReplicas": 2}}
    assert outcomes.serving(deployment, 2, None, current=True).ready.status
    deployment["status"]["availableReplicas"] = 1
    assert not outcomes.serving(deployment, 2, None, current=True).ready.status
    crashed = {"metadata": {"name": "tumor-x", "labels": {children.COMPONENT_LABEL: "serve", children.VERSION_LABEL: "v1"}},
               "status": {"containerStatuses": [{"name": "serve", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                                 "lastState": {"terminated": {
                                                     "exitCode": 1, "message": "artifact refused: authentication tag mismatch\n"}}}]}}
    snapshot = Snapshot(OWNER, 1, False, True, None, SPEC, "img", True, None, None, None, None, None, {}, (crashed,), None, None,
                        None, None, {}, NOW)
    failure = serve_failure(snapshot, "v1")
    assert failure is not None and "authentication tag mismatch" in failure[1]
    outcome = outcomes.serving(deployment, 2, failure, current=True)
    assert outcome.ready.reason == "ServingFailed" and "authentication tag" in outcome.ready.message
    # The serve worker's refusal of an artifact that is not the one the operator recorded names its reason.
    refusal = {"reason": "ArtifactRejected", "message": "artifact model.smdl has digest sha256:aa, expected sha256:bb"}
    crashed["status"]["containerStatuses"][0]["lastState"]["terminated"]["message"] = json.dumps(refusal)
    failure = serve_failure(replace(snapshot, pods=(crashed,)), "v1")
    assert failure == ("ArtifactRejected", "serving pod tumor-x exited 1: " + refusal["message"])
    outcome = outcomes.serving(deployment, 2, failure, current=True)
    assert outcome.ready.reason == "ArtifactRejected" and outcome.progress is Progress.STALLED


def test_serving_pods_read_the_allow_list_from_a_directory_mount_that_the_kubelet_refreshes() -> None:
    deployment = children.deployment(OWNER, SPEC, SPEC.versions, "worker:dev", DIGEST)
    pod = deployment["spec"]["template"]["spec"]
    (main,) = pod["containers"]
    args = worker_args(pod)
    assert str(args.allow_list) == f"{children.ALLOW_LIST_DIR}/{children.ALLOW_LIST_FILE}"
    (mount,) = [m for m in main["volumeMounts"] if m["name"] == "allow-list"]
    assert mount == {"name": "allow-list", "mountPath": children.ALLOW_LIST_DIR, "readOnly": True}, "no subPath"
    (volume,) = [v for v in pod["volumes"] if v["name"] == "allow-list"]
    assert volume["configMap"]["name"] == children.allow_list_name("tumor") == "tumor-allow-list"
    config_map = children.allow_list_config_map(OWNER, '{"version": 1, "clients": []}\n')
    assert config_map["data"] == {children.ALLOW_LIST_FILE: '{"version": 1, "clients": []}\n'}
    assert config_map["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid
    # Only the ConfigMap's name is in the pod template: a new list rolls no pod.
    assert "clients" not in json.dumps(deployment)


def test_every_pod_waits_for_its_network_policy_before_anything_else_runs() -> None:
    versions = SPEC.versions
    pods = [*pods_of(), children.compress_job(OWNER, SPEC, versions, "custom-image")["spec"]["template"]["spec"]]
    for pod in pods:
        gate = pod["initContainers"][0]
        assert gate["name"] == children.ISOLATION_GATE
        assert gate["command"][:2] == ["securemodel-worker", "await-isolation"]
        assert gate["image"] == children.WORKER_IMAGE  # the operator's own image, whatever the model's
        assert [m["mountPath"] for m in gate["volumeMounts"]] == ["/tmp"]  # it can read no data
        cli.build_parser().parse_args(gate["command"][1:])


def test_a_pod_stopped_by_the_isolation_gate_never_ran_its_workload_and_says_why() -> None:
    message = "NetworkNotIsolated: the pod could still connect to the API server"
    pod = {"metadata": {"name": "p"}, "status": {"phase": "Failed", "initContainerStatuses": [
        {"name": children.ISOLATION_GATE, "containerID": "c://1",
         "state": {"terminated": {"exitCode": 1, "containerID": "c://1", "message": message}}}]}}
    view = pod_view(pod, "train", "TrainResult")
    assert not view.ran  # the claim is released, not committed: no data was mounted
    assert message in view.pending


def test_no_pod_of_a_table_model_mounts_the_pseudonymization_key_and_serving_never_the_data() -> None:
    # Identifier columns are never inputs (features and the label may only be generalized), so no pod needs the
    # key: training reads only the label and features, serving takes its encoding from the artifact.
    data = {"source": "pvc://clinic-data/exports/patients.csv", "samples": 100,
            "schema": {"label": {"column": "readmitted", "classes": ["no", "yes"]},
                       "features": [{"name": "age", "type": "numeric", "min": 0, "max": 110}]},
            "masking": {"pseudonymize": ["patient_id"], "keySecretRef": {"name": "patient-pseudonym-key", "key": "key"},
                        "drop": ["name"]}}  # fmt: skip
    train, _, serve = pods_of(spec_with(data=data))
    assert "patient-pseudonym-key" not in json.dumps([train["volumes"], serve["volumes"]])
    assert "patient-pseudonym-key" not in json.dumps(serve)
    assert worker_args(train).data_masking == data["masking"], "training applies the masking it is given"
    assert [v["name"] for v in serve["volumes"]] == ["tmp", "artifacts", "keys", "tls", "allow-list"]
    assert not {"--data-schema", "--data-masking", "--data-root"} & set(serve["containers"][0]["command"])
