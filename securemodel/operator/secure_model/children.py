"""The objects a SecureModel owns, built as plain dicts from its spec (pure: no API calls).

Every child has a deterministic name derived from the model's name (and, for the Jobs, the
version of the spec they build: :class:`Versions`), the labels in :func:`labels`, and an ownerReference to the model, so
the garbage collector removes it with the model. Key material reaches pods only as files
of mounted Secrets: no builder here puts a key, a certificate or a Secret's data into an
argument, an environment variable or a label.

Every pod meets the Pod Security ``restricted`` profile (:func:`pod_security_context`,
:func:`container_security_context`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from securemodel.api import GROUP, VERSION
from securemodel.api.secure_model import KIND
from securemodel.data.sources import Evaluation, PvcSource, parse_source
from securemodel.operator.secure_model.spec import ModelSpecs, PrivacySpec, Versions
from securemodel.operator.settings import AWAIT_NETWORK_ISOLATION, WORKER_IMAGE
from securemodel.serving.allowlist import FILE_NAME as ALLOW_LIST_FILE

if TYPE_CHECKING:  # rounds reads the FederatedRound's children, which build on these
    from securemodel.operator.secure_model.rounds import RoundModel

MODEL_LABEL: Final = f"{GROUP}/model"
UID_LABEL: Final = f"{GROUP}/model-uid"
COMPONENT_LABEL: Final = f"{GROUP}/component"
VERSION_LABEL: Final = f"{GROUP}/version"
TRAINING_LABEL: Final = f"{GROUP}/training-version"
CLIENT_LABEL: Final = f"{GROUP}/client"
MANAGED_BY: Final = {"app.kubernetes.io/managed-by": "securemodel-operator"}

USER_ID: Final = 65532
DATA_KEY: Final = "data.key"
KEYS_DIR: Final = "/var/run/securemodel/keys"
TLS_DIR: Final = "/var/run/securemodel/tls"
ALLOW_LIST_DIR: Final = "/var/run/securemodel/allow-list"
ARTIFACTS_DIR: Final = "/artifacts"
ROUND_DIR: Final = "/round"  # a FederatedRound's artifacts volume, read-only (spec.model.fromRound)
ROUND_KEY_DIR: Final = "/var/run/securemodel/round-key"
DATA_DIR: Final = "/data"
SERVE_PORT: Final = 8443
METRICS_PORT: Final = 9090
BUDGET_LABEL: Final = f"{GROUP}/budget"
# Held on every train pod until the operator has recorded in the ledger whether it ran a
# container (see securemodel.operator.secure_model.settlement): no pod of a claim vanishes unseen.
SETTLEMENT_FINALIZER: Final = f"{GROUP}/settlement"


@dataclass(frozen=True)
class Owner:
    """The SecureModel that owns the children."""

    name: str
    namespace: str
    uid: str

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Owner:
        metadata = body["metadata"]
        return cls(metadata["name"], metadata["namespace"], metadata["uid"])


@dataclass(frozen=True)
class InitParts:
    """What a fine-tuning adds to the train pod (:func:`securemodel.operator.secure_model.starts.train_parts`):
    the worker's flags, and the source's volume and key, mounted read-only."""

    args: tuple[str, ...]
    volumes: tuple[dict[str, Any], ...]
    mounts: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Run:
    """The DP-SGD run the operator calibrated: the worker must honour it exactly."""

    noise_multiplier: float
    sample_rate: float
    steps: int


# --- names -------------------------------------------------------------------------------------


def pvc_name(model: str) -> str:
    return f"{model}-artifacts"


def data_key_secret_name(model: str) -> str:
    return f"{model}-data-key"


def ca_secret_name(model: str) -> str:
    return f"{model}-ca"


def tls_secret_name(model: str) -> str:
    return f"{model}-tls"


def client_secret_name(model: str, client: str) -> str:
    return f"{model}-client-{client}"


def allow_list_name(model: str) -> str:
    return f"{model}-allow-list"


def train_job_name(model: str, version: str) -> str:
    return f"{model}-train-{version}"


def compress_job_name(model: str, version: str) -> str:
    return f"{model}-compress-{version}"


def trained_artifact(training: str) -> str:
    return f"{ARTIFACTS_DIR}/{training}/model.smdl"


def compressed_artifact(versions: Versions) -> str:
    """Next to the trained artifact it was made from; one file per version, never overwritten."""
    return f"{ARTIFACTS_DIR}/{versions.training}/{versions.version}.compressed.smdl"


def endpoint(model: str, namespace: str) -> str:
    return f"https://{model}.{namespace}.svc:{SERVE_PORT}"


# --- metadata ----------------------------------------------------------------------------------


def labels(owner: Owner, component: str, **extra: str) -> dict[str, str]:
    return {**MANAGED_BY, MODEL_LABEL: owner.name, UID_LABEL: owner.uid, COMPONENT_LABEL: component, **extra}


def selector(owner: Owner, component: str | None = None) -> str:
    """A label selector of the model's children (of one component)."""
    parts = [f"{UID_LABEL}={owner.uid}"]
    if component:
        parts.append(f"{COMPONENT_LABEL}={component}")
    return ",".join(parts)


def owner_reference(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND.kind,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(owner: Owner, name: str, component: str, **extra: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner, component, **extra),
        "ownerReferences": [owner_reference(owner)],
    }


# --- storage and secrets -----------------------------------------------------------------------


def artifacts_pvc(owner: Owner, size: str) -> dict[str, Any]:
    """The model's artifact volume: default StorageClass, ReadWriteOnce."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(owner, pvc_name(owner.name), "artifacts"),
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
    }


def secret(owner: Owner, name: str, component: str, data: Mapping[str, bytes], **extra: str) -> dict[str, Any]:
    """An Opaque Secret holding ``data`` (base64 in the object; never logged)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": metadata(owner, name, component, **extra),
        "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
    }


def results_name(model: str) -> str:
    return f"{model}-results"


def results_config_map(owner: Owner, results: Mapping[str, str]) -> dict[str, Any]:
    """The workers' results (JSON by ``train-<version>`` / ``compress-<version>``), kept once read from their pods.

    Only shown in status: what the ledger charges is never read back from here.
    """
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(owner, results_name(owner.name), "results"),
        "data": dict(results),
    }


def allow_list_config_map(owner: Owner, content: str) -> dict[str, Any]:
    """The serving pods' allow-list (:mod:`securemodel.serving.allowlist`): which client certificates they
    answer, and how often. It holds no secret (serials and fingerprints of certificates, rate limits).

    The pods mount it as a directory, never a ``subPath``, so the kubelet replaces the file in place
    and the server reloads it without a restart: a change lands within the kubelet's sync period
    (about a minute at worst) and rolls no pod.
    """
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(owner, allow_list_name(owner.name), "allow-list"),
        "data": {ALLOW_LIST_FILE: content},
    }


def data_key_secret(owner: Owner, key: bytes) -> dict[str, Any]:
    return secret(owner, data_key_secret_name(owner.name), "data-key", {DATA_KEY: key})


def secret_bytes(obj: Mapping[str, Any], key: str) -> bytes | None:
    """One decoded value of a Secret as read from the API (``data`` is base64)."""
    value = (obj.get("data") or {}).get(key)
    return base64.b64decode(value) if value is not None else None


# --- pods --------------------------------------------------------------------------------------


def pod_security_context() -> dict[str, Any]:
    """Pod-level settings of the ``restricted`` profile; fsGroup makes mounted volumes group-readable."""
    return {
        "runAsNonRoot": True,
        "runAsUser": USER_ID,
        "runAsGroup": USER_ID,
        "fsGroup": USER_ID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


# Caches of Python libraries go to the writable /tmp (the root filesystem is read-only).
WORKER_ENV: Final = (
    {"name": "HOME", "value": "/tmp"},
    {"name": "XDG_CACHE_HOME", "value": "/tmp/.cache"},
    {"name": "MPLCONFIGDIR", "value": "/tmp/.matplotlib"},
    {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
    {"name": "PYTHONUNBUFFERED", "value": "1"},
)


def container(name: str, image: str, command: Sequence[str], mounts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(command),
        "env": [dict(env) for env in WORKER_ENV],
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *map(dict, mounts)],
        "securityContext": container_security_context(),
        "terminationMessagePath": "/dev/termination-log",
    }


ISOLATION_GATE: Final = "await-isolation"
# Seconds a pod waits for its NetworkPolicy before it fails without running its workload.
ISOLATION_WAIT_SECONDS: Final = 120


def isolation_gates() -> list[dict[str, Any]]:
    """The first init container of every pod the operator runs (:mod:`securemodel.workers.isolation`):
    no other container starts before the pod's NetworkPolicy is enforced.

    It runs the operator's own worker image and mounts nothing but ``/tmp``, so it can read no data:
    a pod that stopped in it never ran its workload (:func:`securemodel.operator.secure_model.jobs.pod_view`).
    Empty when the operator is told not to wait (a cluster without a NetworkPolicy engine).
    """
    if not AWAIT_NETWORK_ISOLATION:
        return []
    gate = container(ISOLATION_GATE, WORKER_IMAGE, ["securemodel-worker", "await-isolation", "--within",
                                                    str(ISOLATION_WAIT_SECONDS)], [])  # fmt: skip
    gate["resources"] = {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}
    return [gate]


def _volumes(owner: Owner, *, artifacts_read_only: bool) -> list[dict[str, Any]]:
    return [
        {"name": "tmp", "emptyDir": {}},
        {
            "name": "artifacts",
            "persistentVolumeClaim": {"claimName": pvc_name(owner.name), "readOnly": artifacts_read_only},
        },
        {
            "name": "keys",
            "secret": {"secretName": data_key_secret_name(owner.name), "defaultMode": 0o440},
        },
    ]


_KEY_MOUNTS: Final = (
    {"name": "artifacts", "mountPath": ARTIFACTS_DIR},
    {"name": "keys", "mountPath": KEYS_DIR, "readOnly": True},
)


def resources(spec: ModelSpecs) -> dict[str, Any]:
    """``spec.resources`` as requests and limits; ``gpus`` becomes ``nvidia.com/gpu`` (request = limit)."""
    amounts: dict[str, Any] = {"cpu": spec.resources.cpu, "memory": spec.resources.memory}
    if spec.resources.gpus > 0:
        amounts["nvidia.com/gpu"] = str(spec.resources.gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def worker_image(spec: ModelSpecs, default: str) -> str:
    return spec.model.image or default


def _job(
    owner: Owner, name: str, component: str, pod: Mapping[str, Any], finalizers: Sequence[str] = (), **versions: str
) -> dict[str, Any]:
    meta = metadata(owner, name, component, **versions)
    template: dict[str, Any] = {"labels": dict(meta["labels"])}
    if finalizers:
        template["finalizers"] = list(finalizers)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            # A retry would read the data again and spend ε again: one attempt only.
            "backoffLimit": 0,
            "template": {"metadata": template, "spec": dict(pod)},
        },
    }


def _mkdir(image: str, path: str) -> dict[str, Any]:
    """An init container creating the version's artifact directory (the workers never create directories)."""
    code = "import os, sys; os.makedirs(sys.argv[1], mode=0o750, exist_ok=True)"
    return container("prepare", image, ["python", "-c", code, path], [_KEY_MOUNTS[0]])


def train_job(owner: Owner, spec: ModelSpecs, training: str, run: Run | None, image: str,
              init: InitParts | None = None) -> dict[str, Any]:  # fmt: skip
    """The DP-SGD training Job: exactly σ, q and steps of ``run`` (the operator's calibration), nothing
    secret on its command line. Its pods carry :data:`SETTLEMENT_FINALIZER` and the budget's name. With
    ``init`` (``spec.model.from``) it starts from the source's weights, mounted read-only.

    For a public model (``spec.privacy.public``, and only for one: ``run`` is None exactly then) the worker is
    told ``--public`` with the spec's epochs and batch size: plain training, no claim to settle, so its pods
    carry no finalizer and no budget. The pod cannot choose this: it is the operator's argument."""
    model, data, privacy = spec.model, spec.data, spec.privacy
    assert data is not None and privacy is not None, "a model that trains has spec.data and spec.privacy"
    assert (run is None) == spec.public, "DP-SGD needs the operator's calibration; a public training has none"
    args = ["securemodel-worker", "train"]
    if model.architecture:
        args += ["--architecture", model.architecture]
    else:
        args += ["--entrypoint", str(model.entrypoint)]
    args += ["--params", model.params, "--data-source", data.source]
    if data.samples is not None:
        args += ["--data-samples", str(data.samples)]
    if data.schema:
        args += ["--data-schema", data.schema]
    if data.masking:
        args += ["--data-masking", data.masking]
    args += [
        "--seed", str(spec.training.seed),
        "--optimizer", spec.training.optimizer,
        "--learning-rate", repr(spec.training.learning_rate),
    ]  # fmt: skip
    if isinstance(privacy, PrivacySpec) and run is not None:
        args += [
            "--noise-multiplier", repr(float(run.noise_multiplier)),
            "--sample-rate", repr(float(run.sample_rate)),
            "--steps", str(int(run.steps)),
            "--max-grad-norm", repr(privacy.max_grad_norm),
        ]  # fmt: skip
    else:
        args += ["--public", "--epochs", str(spec.training.epochs), "--batch-size", str(spec.training.batch_size)]
    args += [
        "--device", "cuda" if spec.resources.gpus > 0 else "cpu",
        "--output", trained_artifact(training),
        "--model-uid", owner.uid,
        "--training-version", training,
        "--data-key-file", f"{KEYS_DIR}/{DATA_KEY}",
        "--data-root", DATA_DIR,
    ]  # fmt: skip
    volumes = _volumes(owner, artifacts_read_only=False)
    mounts = list(_KEY_MOUNTS)
    source = parse_source(data.source)
    if isinstance(source, PvcSource):
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": source.claim, "readOnly": True}})
        mounts.append({"name": "data", "mountPath": DATA_DIR, "readOnly": True})
    if init is not None:
        args += list(init.args)
        volumes += [dict(v) for v in init.volumes]
        mounts += [dict(m) for m in init.mounts]
    main = container("train", image, args, mounts)
    main["resources"] = resources(spec)
    pod = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "initContainers": [*isolation_gates(), _mkdir(image, f"{ARTIFACTS_DIR}/{training}")],
        "containers": [main],
        "volumes": volumes,
    }
    name = train_job_name(owner.name, training)
    if not isinstance(privacy, PrivacySpec):
        return _job(owner, name, "train", pod, **{VERSION_LABEL: training})
    extra = {VERSION_LABEL: training, BUDGET_LABEL: privacy.budget_ref}
    return _job(owner, name, "train", pod, (SETTLEMENT_FINALIZER,), **extra)


def compress_job(
    owner: Owner,
    spec: ModelSpecs,
    versions: Versions,
    image: str,
    evaluation: Evaluation | None = None,
    from_round: RoundModel | None = None,
) -> dict[str, Any]:
    """Prune and quantise the trained artifact of ``versions.training`` into the compressed artifact of ``versions``.

    With ``evaluation`` (``spec.data.evaluation``, data the user declared public) both models are
    evaluated on all of it, its ``pvc://`` claim mounted read-only at :data:`DATA_DIR`; without
    it the pod measures no accuracy. It never mounts the training data.

    With ``from_round`` (``spec.model.fromRound``) the input is the round's global model instead: the
    round's artifacts volume is mounted read-only at :data:`ROUND_DIR` and its data key at
    :data:`ROUND_KEY_DIR`, and the pod compresses only the file that authenticates under that key as
    the round's final global model (bound to its uid and ``spec.rounds``) with the digest the round's
    aggregator reported; the evaluation is kept apart from each silo's data.
    """
    if from_round is not None:
        input_args = ["--input", from_round.artifact.replace(ARTIFACTS_DIR, ROUND_DIR, 1), "--from-round",
                      "--input-key-file", f"{ROUND_KEY_DIR}/{DATA_KEY}", "--input-round-uid", from_round.uid,
                      "--input-round", str(from_round.rounds), "--input-digest", from_round.digest]  # fmt: skip
        for silo_source in from_round.sources:
            input_args += ["--training-source", silo_source]
    else:
        input_args = ["--input", trained_artifact(versions.training)]
    args = [
        "securemodel-worker", "compress",
        *input_args,
        "--output", compressed_artifact(versions),
        "--sparsity", repr(spec.compression.sparsity),
        "--quantization", spec.compression.quantization,
        "--model-uid", owner.uid,
        "--training-version", versions.training,
        "--model-version", versions.version,
        "--data-key-file", f"{KEYS_DIR}/{DATA_KEY}",
    ]  # fmt: skip
    volumes = _volumes(owner, artifacts_read_only=False)
    mounts = list(_KEY_MOUNTS)
    if evaluation is not None:
        args += ["--evaluation-source", evaluation.source]
        if evaluation.samples is not None:
            args += ["--evaluation-samples", str(evaluation.samples)]
        source = parse_source(evaluation.source)
        if isinstance(source, PvcSource):
            args += ["--data-root", DATA_DIR]
            volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": source.claim, "readOnly": True}})
            mounts.append({"name": "data", "mountPath": DATA_DIR, "readOnly": True})
    if from_round is not None:
        volumes += [
            {"name": "round", "persistentVolumeClaim": {"claimName": from_round.pvc, "readOnly": True}},
            {"name": "round-key", "secret": {"secretName": from_round.data_key_secret, "defaultMode": 0o440}},
        ]
        mounts += [{"name": "round", "mountPath": ROUND_DIR, "readOnly": True},
                   {"name": "round-key", "mountPath": ROUND_KEY_DIR, "readOnly": True}]  # fmt: skip
    main = container("compress", image, args, mounts)
    main["resources"] = {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}}
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "initContainers": isolation_gates(),
        "containers": [main],
        "volumes": volumes,
    }
    if from_round is not None:  # no train pod made the version's directory
        pod["initContainers"] = [_mkdir(image, f"{ARTIFACTS_DIR}/{versions.training}")]
    version_labels = {VERSION_LABEL: versions.version, TRAINING_LABEL: versions.training}
    return _job(owner, compress_job_name(owner.name, versions.version), "compress", pod, **version_labels)


def serving_labels(owner: Owner) -> dict[str, str]:
    """The serving pods' selector (stable across versions, so a rollout replaces pods in place)."""
    return {MODEL_LABEL: owner.name, COMPONENT_LABEL: "serve"}


def deployment(
    owner: Owner, spec: ModelSpecs, versions: Versions, image: str, digest: str | None = None
) -> dict[str, Any]:
    """The serving Deployment of ``version``'s compressed artifact (rolling: old pods serve until new ones are ready).

    The pods serve only the file whose SHA-256 is ``digest`` (the compress result's) and that
    authenticates as this model's (uid) compressed artifact of ``versions``; anything else stops
    them before they listen, with the termination message ``{"reason": "ArtifactRejected", ...}``.
    Without ``digest`` the pods refuse to start (``--artifact-digest`` is required).

    The pods answer only the client certificates of the allow-list ConfigMap
    (:func:`allow_list_config_map`), mounted as a directory so that the kubelet refreshes it: a
    revocation lands within the kubelet's sync period (about 60 s at worst). Only the ConfigMap's
    name is in the template, so a new allow-list never rolls the pods.
    """
    args = [
        "securemodel-worker", "serve",
        "--artifact", compressed_artifact(versions),
        "--data-key-file", f"{KEYS_DIR}/{DATA_KEY}",
        "--tls-dir", TLS_DIR,
        "--model-name", owner.name,
        "--model-uid", owner.uid,
        "--training-version", versions.training,
        "--model-version", versions.version,
        "--port", str(SERVE_PORT),
        "--metrics-port", str(METRICS_PORT),
        "--allow-list", f"{ALLOW_LIST_DIR}/{ALLOW_LIST_FILE}",
    ]  # fmt: skip
    if digest is not None:
        args += ["--artifact-digest", digest]
    mounts = [
        {"name": "artifacts", "mountPath": ARTIFACTS_DIR, "readOnly": True},
        {"name": "keys", "mountPath": KEYS_DIR, "readOnly": True},
        {"name": "tls", "mountPath": TLS_DIR, "readOnly": True},
        {"name": "allow-list", "mountPath": ALLOW_LIST_DIR, "readOnly": True},
    ]
    main = container("serve", image, args, mounts)
    main.update(
        ports=[
            {"name": "https", "containerPort": SERVE_PORT},
            {"name": "metrics", "containerPort": METRICS_PORT},
        ],
        readinessProbe={"httpGet": {"path": "/v2/health/ready", "port": "metrics"}, "periodSeconds": 2},
        livenessProbe={
            "httpGet": {"path": "/v2/health/live", "port": "metrics"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        startupProbe={"httpGet": {"path": "/v2/health/live", "port": "metrics"}, "periodSeconds": 1, "failureThreshold": 120},
        resources={"requests": {"cpu": "50m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        # A refused artifact writes {"reason": "ArtifactRejected", "message": ...} to the termination log;
        # any other failure to start leaves its one-line reason on stderr, which then becomes the message.
        terminationMessagePolicy="FallbackToLogsOnError",
    )
    volumes = _volumes(owner, artifacts_read_only=True)
    volumes.append({"name": "tls", "secret": {"secretName": tls_secret_name(owner.name), "defaultMode": 0o440}})
    volumes.append({"name": "allow-list", "configMap": {"name": allow_list_name(owner.name), "defaultMode": 0o444}})
    version = {VERSION_LABEL: versions.version, TRAINING_LABEL: versions.training}
    pod_labels = {**labels(owner, "serve", **version), **serving_labels(owner)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(owner, owner.name, "serve", **version),
        "spec": {
            "replicas": spec.serving.replicas,
            "selector": {"matchLabels": serving_labels(owner)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security_context(),
                    "initContainers": isolation_gates(),
                    "containers": [main],
                    "volumes": volumes,
                },
            },
        },
    }


def service(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, owner.name, "serve"),
        "spec": {
            "selector": serving_labels(owner),
            "ports": [
                {"name": "https", "port": SERVE_PORT, "targetPort": "https"},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics"},
            ],
        },
    }
