"""The objects a FederatedRound owns, built as plain dicts (pure: no API calls).

In the round's namespace (ownerReference to the round, so the garbage collector removes them):
the CA Secret (read by the operator only), the SuperLink's TLS Secret, the silos' public keys,
the round's data key, the artifacts PVC, the results ConfigMap, the SuperLink Service and the
aggregator Job (``fl-aggregate``: SuperLink, silo registration, run submission, FedAvg under
SecAgg+). In each silo's namespace (labels only: an ownerReference cannot cross namespaces, so
the operator deletes these itself): the silo's SuperNode Secret (its private authentication key
and the round's CA certificate) and its SuperNode Job (``fl-client``).

Guarantees each builder keeps (unit-tested):

* the aggregator's pod mounts no silo data and no silo Secret: only the SuperLink TLS Secret, the
  silos' *public* keys, the round's data key, the round's PVC and, for ``fromRound``, the previous
  round's PVC and data key; the only accuracy it reports is measured on ``spec.evaluation`` (a
  built-in public evaluation part, in the image), and a silo's pod runs no evaluation;
* a silo's pod mounts only that silo's data (its ``pvc://`` claim, read-only) and its own
  SuperNode Secret, and runs exactly the σ, q and steps of the claim recorded in its budget;
* every pod meets Pod Security ``restricted`` and runs the operator's worker image; key material
  reaches pods only as files of mounted Secrets.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from securemodel.api import GROUP, VERSION
from securemodel.api.federated_round import KIND
from securemodel.data.sources import PvcSource, parse_source
from securemodel.operator.federated.spec import RoundSpec, SiloSpec
from securemodel.operator.secure_model.children import (
    BUDGET_LABEL,
    COMPONENT_LABEL,
    DATA_DIR,
    DATA_KEY,
    MANAGED_BY,
    SETTLEMENT_FINALIZER,
    Owner,
    Run,
    container,
    isolation_gates,
    pod_security_context,
)
from securemodel.workers.federated.arguments import SUPERLINK_PORT

ROUND_LABEL: Final = f"{GROUP}/round"
ROUND_UID_LABEL: Final = f"{GROUP}/round-uid"
SILO_LABEL: Final = f"{GROUP}/silo"
AGGREGATOR: Final = "aggregator"
SUPERNODE: Final = "supernode"

AUTH_KEY: Final = "auth.key"
CA_CERT: Final = "ca.crt"
TLS_DIR: Final = "/etc/securemodel/superlink-tls"
SILO_KEYS_DIR: Final = "/etc/securemodel/silo-keys"
ROUND_KEY_DIR: Final = "/etc/securemodel/round-key"
START_KEY_DIR: Final = "/etc/securemodel/start-key"
SUPERNODE_DIR: Final = "/etc/securemodel/supernode"
OUTPUT_DIR: Final = "/artifacts"
START_DIR: Final = "/start"
WORK_DIR: Final = "/work"
# Flower's processes each load torch; one thread each keeps a pod within its CPU request.
THREADS: Final = ({"name": "OMP_NUM_THREADS", "value": "1"}, {"name": "MKL_NUM_THREADS", "value": "1"})
# After the aggregator's own deadline: time for the SuperLink to start and the result to be written.
GRACE_SECONDS: Final = 300


# --- names -------------------------------------------------------------------------------------


def ca_secret_name(round_name: str) -> str:
    return f"{round_name}-ca"


def tls_secret_name(round_name: str) -> str:
    return f"{round_name}-superlink-tls"


def silo_keys_secret_name(round_name: str) -> str:
    return f"{round_name}-silo-keys"


def data_key_secret_name(round_name: str) -> str:
    return f"{round_name}-data-key"


def supernode_secret_name(round_name: str, silo: str) -> str:
    return f"{round_name}-{silo}-supernode"


def pvc_name(round_name: str) -> str:
    return f"{round_name}-artifacts"


def results_name(round_name: str) -> str:
    return f"{round_name}-results"


def service_name(round_name: str) -> str:
    return f"{round_name}-superlink"


def aggregator_job_name(round_name: str) -> str:
    return f"{round_name}-{AGGREGATOR}"


def supernode_job_name(round_name: str, silo: str) -> str:
    """``<round>-<silo>``: at most 40 + 1 + 22 = 63 characters (the API's name limits)."""
    return f"{round_name}-{silo}"


def superlink_address(owner: Owner) -> str:
    return f"{service_name(owner.name)}.{owner.namespace}.svc:{SUPERLINK_PORT}"


def artifact_path(rounds: int) -> str:
    """Where the aggregator writes the global model after round ``rounds`` (``round-NNN.model``)."""
    return f"{OUTPUT_DIR}/round-{rounds:03d}.model"


# --- metadata ----------------------------------------------------------------------------------


def labels(owner: Owner, component: str, **extra: str) -> dict[str, str]:
    return {**MANAGED_BY, ROUND_LABEL: owner.name, ROUND_UID_LABEL: owner.uid, COMPONENT_LABEL: component, **extra}


def owner_reference(owner: Owner) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND.kind, "name": owner.name, "uid": owner.uid,
            "controller": True, "blockOwnerDeletion": True}  # fmt: skip


def metadata(owner: Owner, name: str, component: str, namespace: str | None = None, **extra: str) -> dict[str, Any]:
    """Metadata of a child; one in another namespace than the round's carries no ownerReference."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace or owner.namespace,
                            "labels": labels(owner, component, **extra)}  # fmt: skip
    if meta["namespace"] == owner.namespace:
        meta["ownerReferences"] = [owner_reference(owner)]
    return meta


def secret(owner: Owner, name: str, component: str, data: Mapping[str, bytes], namespace: str | None = None,
           **extra: str) -> dict[str, Any]:  # fmt: skip
    """An Opaque Secret holding ``data`` (base64 in the object; never logged)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": metadata(owner, name, component, namespace, **extra),
        "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
    }


def artifacts_pvc(owner: Owner, size: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(owner, pvc_name(owner.name), "artifacts"),
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
    }


def results_config_map(owner: Owner, results: Mapping[str, str]) -> dict[str, Any]:
    """The workers' results (JSON by ``aggregator`` and ``silo-<name>``), kept once read from their pods.

    Only shown in status and used to start a later round (``fromRound``); no ledger charge is read from here.
    """
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(owner, results_name(owner.name), "results"),
            "data": dict(results)}  # fmt: skip


def service(owner: Owner) -> dict[str, Any]:
    """The SuperLink's Service: the Fleet API (the only API other hosts reach) on :data:`SUPERLINK_PORT`."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, service_name(owner.name), AGGREGATOR),
        "spec": {
            "selector": {ROUND_UID_LABEL: owner.uid, COMPONENT_LABEL: AGGREGATOR},
            "ports": [{"name": "fleet", "port": SUPERLINK_PORT, "targetPort": "fleet"}],
        },
    }


# --- pods --------------------------------------------------------------------------------------


def _secret_volume(name: str, secret_name: str) -> dict[str, Any]:
    return {"name": name, "secret": {"secretName": secret_name, "defaultMode": 0o440}}


def _job(meta: dict[str, Any], pod: Mapping[str, Any], deadline: int, finalizers: tuple[str, ...] = ()) -> dict[str, Any]:
    template: dict[str, Any] = {"labels": dict(meta["labels"])}
    if finalizers:
        template["finalizers"] = list(finalizers)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            # A retry would read the data again (a silo) or run the federation again (the aggregator).
            "backoffLimit": 0,
            # The kubelet's backstop should the operator be down when the round ends.
            "activeDeadlineSeconds": deadline,
            "template": {"metadata": template, "spec": dict(pod)},
        },
    }


def run_seconds(spec: RoundSpec) -> int:
    """How long the aggregator's run may take: one ``spec.timeout`` per FedAvg round."""
    return spec.rounds * spec.timeout_seconds


def stage_timeout(spec: RoundSpec) -> int:
    """Seconds the aggregator waits for the silos in one SecAgg+ stage: a fifth of a round's timeout, at least 30."""
    return max(30, spec.timeout_seconds // 5)


@dataclass(frozen=True)
class Start:
    """What the global model starts from: a built-in architecture (fresh weights built from the public
    metadata of ``source``) or the artifact of a previous round."""

    architecture: str | None = None
    params: str = "{}"  # canonical JSON
    source: str = ""
    previous_round: str | None = None
    previous_artifact: str = ""  # path on the previous round's PVC, as its aggregator wrote it
    # The previous round's metadata.uid and spec.rounds (never its results ConfigMap's word): its final
    # global model is bound to both, so no other file of it, nor of another round, starts this one.
    previous_uid: str = ""
    previous_rounds: int = 0


def aggregator_job(owner: Owner, spec: RoundSpec, start: Start, max_weight: int, image: str) -> dict[str, Any]:
    """The aggregator Job: ``fl-aggregate`` with the spec's FedAvg and SecAgg+ settings, evaluating the global
    model on ``spec.evaluation`` (public data; no accuracy without it).

    It mounts the SuperLink TLS Secret, the silos' public keys, the round's data key and PVC, and for
    ``fromRound`` the previous round's PVC (read-only) and data key; never a silo's data or Secret.
    Each global model it writes is bound to this round's uid and round number; for ``fromRound`` it
    starts only from the file bound to the previous round's uid and its final round (``spec.rounds``).
    """
    args = [
        "securemodel-worker", "fl-aggregate",
        "--round-uid", owner.uid,
        "--tls-dir", TLS_DIR,
        "--silo-keys-dir", SILO_KEYS_DIR,
        "--port", str(SUPERLINK_PORT),
        "--rounds", str(spec.rounds),
        "--min-clients", str(spec.min_clients),
        "--max-weight", str(max_weight),
        "--learning-rate", repr(spec.learning_rate),
        "--data-key-file", f"{ROUND_KEY_DIR}/{DATA_KEY}",
        "--output-dir", OUTPUT_DIR,
        "--stage-timeout", str(stage_timeout(spec)),
        "--timeout", str(run_seconds(spec)),
        "--work-dir", WORK_DIR,
    ]  # fmt: skip
    if spec.evaluation is not None:  # built-in only: the aggregator mounts no data volume
        args += ["--evaluation-source", spec.evaluation]
        for silo in spec.silos:
            args += ["--silo-source", silo.source]
    if spec.secure_aggregation:
        args += ["--threshold", str(spec.threshold)]
        if spec.num_shares < len(spec.silos):
            args += ["--num-shares", str(spec.num_shares)]
    else:
        args.append("--no-secure-aggregation")
    volumes = [
        {"name": "tmp", "emptyDir": {}},
        {"name": "work", "emptyDir": {}},
        {"name": "artifacts", "persistentVolumeClaim": {"claimName": pvc_name(owner.name)}},
        _secret_volume("tls", tls_secret_name(owner.name)),
        _secret_volume("silo-keys", silo_keys_secret_name(owner.name)),
        _secret_volume("round-key", data_key_secret_name(owner.name)),
    ]
    mounts = [
        {"name": "work", "mountPath": WORK_DIR},
        {"name": "artifacts", "mountPath": OUTPUT_DIR},
        {"name": "tls", "mountPath": TLS_DIR, "readOnly": True},
        {"name": "silo-keys", "mountPath": SILO_KEYS_DIR, "readOnly": True},
        {"name": "round-key", "mountPath": ROUND_KEY_DIR, "readOnly": True},
    ]
    if start.previous_round is not None:
        args += ["--initial-model", start.previous_artifact.replace(OUTPUT_DIR, START_DIR, 1),
                 "--initial-model-key-file", f"{START_KEY_DIR}/{DATA_KEY}",
                 "--initial-round-uid", start.previous_uid, "--initial-round", str(start.previous_rounds)]  # fmt: skip
        volumes += [
            {"name": "start", "persistentVolumeClaim": {"claimName": pvc_name(start.previous_round), "readOnly": True}},
            _secret_volume("start-key", data_key_secret_name(start.previous_round)),
        ]
        mounts += [{"name": "start", "mountPath": START_DIR, "readOnly": True},
                   {"name": "start-key", "mountPath": START_KEY_DIR, "readOnly": True}]  # fmt: skip
    else:
        args += ["--initial-architecture", str(start.architecture), "--initial-params", start.params,
                 "--initial-source", start.source]  # fmt: skip
    main = container(AGGREGATOR, image, args, mounts)
    main["env"] += [dict(env) for env in THREADS]
    main["ports"] = [{"name": "fleet", "containerPort": SUPERLINK_PORT}]
    main["resources"] = {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"memory": "4Gi"}}
    pod = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "initContainers": isolation_gates(),
        "containers": [main],
        "volumes": volumes,
    }
    meta = metadata(owner, aggregator_job_name(owner.name), AGGREGATOR)
    return _job(meta, pod, run_seconds(spec) + GRACE_SECONDS)


def supernode_job(owner: Owner, spec: RoundSpec, silo: SiloSpec, run: Run, steps_per_round: int, image: str) -> dict[str, Any]:
    """One silo's SuperNode Job in the silo's namespace: ``fl-client`` at exactly σ and q of ``run`` and
    ``steps_per_round`` × ``spec.rounds`` = ``run.steps`` steps (the mechanism claimed from the silo's budget).

    Its pods carry :data:`SETTLEMENT_FINALIZER`, and mount only this silo's data and SuperNode Secret.
    """
    assert steps_per_round * spec.rounds == run.steps, "the pod must run exactly the claimed steps"
    args = [
        "securemodel-worker", "fl-client",
        "--name", silo.name,
        "--superlink", superlink_address(owner),
        "--ca-file", f"{SUPERNODE_DIR}/{CA_CERT}",
        "--auth-key-file", f"{SUPERNODE_DIR}/{AUTH_KEY}",
        "--data-source", silo.source,
        "--data-root", DATA_DIR,
        "--noise-multiplier", repr(float(run.noise_multiplier)),
        "--sample-rate", repr(float(run.sample_rate)),
        "--steps-per-round", str(steps_per_round),
        "--rounds", str(spec.rounds),
        "--max-grad-norm", repr(spec.max_grad_norm),
        "--progress-file", f"{WORK_DIR}/progress.json",
        "--restart-window", str(run_seconds(spec) + GRACE_SECONDS),
    ]  # fmt: skip
    if silo.samples is not None:
        args += ["--data-samples", str(silo.samples)]
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {}},
        {"name": "work", "emptyDir": {}},
        _secret_volume("supernode", supernode_secret_name(owner.name, silo.name)),
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "work", "mountPath": WORK_DIR},
        {"name": "supernode", "mountPath": SUPERNODE_DIR, "readOnly": True},
    ]
    source = parse_source(silo.source)
    if isinstance(source, PvcSource):
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": source.claim, "readOnly": True}})
        mounts.append({"name": "data", "mountPath": DATA_DIR, "readOnly": True})
    main = container(SUPERNODE, image, args, mounts)
    main["env"] += [dict(env) for env in THREADS]
    main["resources"] = {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"memory": "4Gi"}}
    pod = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        # fl-client reports the steps its silo ran when stopped: time to stop Flower and write it.
        "terminationGracePeriodSeconds": 60,
        "initContainers": isolation_gates(),
        "containers": [main],
        "volumes": volumes,
    }
    meta = metadata(owner, supernode_job_name(owner.name, silo.name), SUPERNODE, silo.namespace,
                    **{SILO_LABEL: silo.name, BUDGET_LABEL: silo.budget_ref})  # fmt: skip
    return _job(meta, pod, run_seconds(spec) + 2 * GRACE_SECONDS, (SETTLEMENT_FINALIZER,))
