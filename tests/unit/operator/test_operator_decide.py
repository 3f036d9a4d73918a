"""A SecureModel's decision for every lifecycle state and transition, from snapshots built by hand (pure)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509

from securemodel.operator.conditions import Progress
from securemodel.operator.budget.directory import NOT_COVERED, OVERLAPPING, Refusal
from securemodel.operator.secure_model import children, keys, network
from securemodel.operator.secure_model.calibration import plan
from securemodel.operator.secure_model.decide import Decision, Snapshot, Verb, decide, decide_deletion
from securemodel.operator.secure_model.spec import parse
from securemodel.privacy import Calibration, Claim, ClaimState, Consumer, Ledger, dp_sgd_epsilon

NOW = datetime(2026, 11, 26, tzinfo=UTC)
OWNER = children.Owner("m", "clinic", "uid-m")
RAW: dict[str, Any] = {
    "model": {"architecture": "mlp"},
    "data": {"source": "builtin://breast_cancer"},
    "privacy": {"budgetRef": "b", "epsilon": 2.0},
    "training": {"epochs": 2},
    "compression": {"quantization": "int8"},
    "serving": {"replicas": 1, "clients": ["frontend"]},
}
SPEC = parse(RAW)
NO_CLIENTS = parse({**RAW, "serving": {"replicas": 1, "clients": []}})
V = SPEC.versions
PLAN = plan(SPEC, 2.0, 1e-5)
CALIBRATION = Calibration(3.0, PLAN.sample_rate, PLAN.steps, 1.9, 1e-5, "prv")
CONSUMER = Consumer("SecureModel", "clinic", "m", "uid-m", V.training)
TRAIN = children.train_job_name("m", V.training)
COMPRESS = children.compress_job_name("m", V.version)


def claim(state: ClaimState, **marks: Any) -> Claim:
    return Claim(CONSUMER, 2.0, 1e-5, state, "t0", **marks)


def ledger(*claims: Claim) -> Ledger:
    return Ledger(tuple(claims))


def job(name: str, component: str, version: str, **status: Any) -> dict[str, Any]:
    labels = {children.UID_LABEL: "uid-m", children.COMPONENT_LABEL: component, children.VERSION_LABEL: version}
    return {"metadata": {"name": name, "uid": f"uid-{name}", "labels": labels}, "spec": {}, "status": status}


def pod(job_name: str, component: str, version: str, *, state: dict[str, Any], phase: str = "Running",
        result: dict[str, Any] | None = None, held: bool = True) -> dict[str, Any]:  # fmt: skip
    labels = {children.UID_LABEL: "uid-m", children.COMPONENT_LABEL: component, children.VERSION_LABEL: version,
              "job-name": job_name}  # fmt: skip
    if result is not None:
        state = {"terminated": {**state.get("terminated", {}), "message": json.dumps(result)}}
    finalizers = [children.SETTLEMENT_FINALIZER] if held and component == "train" else []
    status = {"phase": phase, "containerStatuses": [{"name": component, "containerID": "c://1", "state": state}]}
    owner = [{"kind": "Job", "name": job_name, "uid": f"uid-{job_name}", "controller": True}]
    return {"metadata": {"name": f"{job_name}-p", "labels": labels, "finalizers": finalizers, "ownerReferences": owner},
            "spec": {"nodeName": "node"}, "status": status}  # fmt: skip


TRAIN_RESULT = {"kind": "TrainResult", "status": "Succeeded", "steps": PLAN.steps, "accuracy": 0.9, "digest": "d1",
                "sizeBytes": 100, "noiseMultiplier": 0.001}  # fmt: skip
COMPRESS_RESULT = {"kind": "CompressResult", "status": "Succeeded", "digest": "d2", "compressedSizeBytes": 10,
                   "compressedAccuracy": 0.89, "sparsity": 0.0, "sizeBytes": 100, "quantization": "int8"}  # fmt: skip
DONE = {"terminated": {"exitCode": 0, "startedAt": "t"}}
RUNNING = {"running": {"startedAt": "t"}}


ISOLATED_ONLY = {network.isolated_policy_name(OWNER.name): network.isolated_policy(OWNER)}
POLICIES = {**ISOLATED_ONLY, network.serving_policy_name(OWNER.name): network.serving_policy(OWNER, None)}


def snapshot(**changes: Any) -> Snapshot:
    base = Snapshot(
        owner=OWNER, generation=1, deleting=False, finalized=True, rotation=None, spec=SPEC, image="worker:dev",
        own_code=True, ledger=ledger(), refusal=None, plan=PLAN, calibration=CALIBRATION, calibration_error=None, jobs={},
        pods=(), deployment=None, service=None, pvc=None, results=None, secrets={}, now=NOW, network_policies=POLICIES,
    )  # fmt: skip
    return replace(base, **changes)


def trained(**changes: Any) -> Snapshot:
    """The spec's version trained and committed, its train Job and pod as the kubelet left them."""
    return snapshot(
        ledger=ledger(claim(ClaimState.COMMITTED, dispatched="t1", started="t2")),
        jobs={TRAIN: job(TRAIN, "train", V.training, succeeded=1)},
        pods=(pod(TRAIN, "train", V.training, state=DONE, phase="Succeeded", result=TRAIN_RESULT, held=False),),
        **changes,
    )


def compressed(**changes: Any) -> Snapshot:
    base = trained()
    jobs = {**base.jobs, COMPRESS: job(COMPRESS, "compress", V.version, succeeded=1)}
    pods = (*base.pods, pod(COMPRESS, "compress", V.version, state=DONE, phase="Succeeded", result=COMPRESS_RESULT))
    return replace(base, jobs=jobs, pods=pods, **changes)


def served_deployment(versions: Any = V, available: int = 1, replicas: int = 1) -> dict[str, Any]:
    desired = children.deployment(OWNER, SPEC, versions, "worker:dev", COMPRESS_RESULT["digest"])
    desired["spec"]["replicas"] = replicas
    return {**desired, "metadata": {**desired["metadata"], "generation": 1},
            "status": {"observedGeneration": 1, "updatedReplicas": available, "availableReplicas": available}}  # fmt: skip


def stored_secrets() -> dict[str, Any]:
    return {w.body["metadata"]["name"]: {**w.body, "metadata": {**w.body["metadata"], "resourceVersion": "1"}}
            for w in keys.wanted_secrets(OWNER, SPEC, {}, NOW)}  # fmt: skip


def keyed(spec: Any = SPEC) -> dict[str, Any]:
    """The key Secrets as stored, and the allow-list of their client certificates as applied."""
    secrets = stored_secrets()
    listed = children.allow_list_config_map(OWNER, keys.allow_list(OWNER, spec, secrets, [], keys.ClientLimits(), NOW))
    return {"secrets": secrets, "allow_list": listed}


def serving(**changes: Any) -> Snapshot:
    """Steady state: the spec's version serves, every child as the operator wants it."""
    steady = {
        "deployment": served_deployment(), "service": children.service(OWNER), "pvc": children.artifacts_pvc(OWNER, "256Mi"),
        **keyed(), "results": children.results_config_map(OWNER, {
            f"train-{V.training}": json.dumps(TRAIN_RESULT, sort_keys=True),
            f"compress-{V.version}": json.dumps(COMPRESS_RESULT, sort_keys=True)}),
    }  # fmt: skip
    return replace(compressed(), **{**steady, **changes})


def verbs(decision: Decision) -> list[tuple[Verb, float]]:
    return [(action.verb, round(action.epsilon, 6)) for action in decision.ledger]


def kinds(objects: Any) -> list[str]:
    return sorted(obj["kind"] for obj in objects)


def conditions(decision: Decision) -> dict[str, tuple[bool, str]]:
    assert decision.outcome is not None
    return {c.type: (c.status, c.reason) for c in (decision.outcome.ready, *decision.outcome.conditions)}


CREDITED = round(dp_sgd_epsilon(3.0, PLAN.sample_rate, PLAN.steps, 1e-5, "prv"), 6)

TABLE = [
    # id, snapshot, phase, progress, ledger verbs, applied kinds, a train Job created, Jobs stopped
    ("budget missing", snapshot(ledger=None), "WaitingForBudget", Progress.STALLED, [], [], False, []),
    ("new model: its train pods' NetworkPolicy comes before anything else", snapshot(ledger=None, network_policies={}),
     "WaitingForBudget", Progress.STALLED, [], ["NetworkPolicy"], False, []),
    ("granted, but its NetworkPolicy not stored yet: no dispatch, no train Job",
     snapshot(ledger=ledger(claim(ClaimState.RESERVED)), network_policies={}), "Training", Progress.WORKING, [],
     ["ConfigMap", "NetworkPolicy", "PersistentVolumeClaim"], False, []),
    ("new model waits for kopf's finalizer before claiming", snapshot(finalized=False), "WaitingForBudget",
     Progress.WORKING, [], [], False, []),
    ("new model claims", snapshot(), "WaitingForBudget", Progress.WORKING, [(Verb.SUBMIT, 2.0)], [], False, []),
    ("budget does not cover the data: no claim", snapshot(refusal=Refusal(NOT_COVERED, "protects pvc://x/, not ...")),
     "WaitingForBudget", Progress.STALLED, [], [], False, []),
    ("budget shares data with another: no claim", snapshot(refusal=Refusal(OVERLAPPING, "shares data with b2")),
     "WaitingForBudget", Progress.STALLED, [], [], False, []),
    ("waiting", snapshot(ledger=ledger(claim(ClaimState.WAITING))), "WaitingForBudget", Progress.WORKING, [], [], False, []),
    ("granted: dispatch, then the train Job", snapshot(ledger=ledger(claim(ClaimState.RESERVED))), "Training",
     Progress.WORKING, [(Verb.DISPATCH, 0.0)], ["ConfigMap", "PersistentVolumeClaim"], True, []),
    ("training: the kubelet's start is recorded",
     snapshot(ledger=ledger(claim(ClaimState.RESERVED, dispatched="t1")), jobs={TRAIN: job(TRAIN, "train", V.training, active=1)},
              pods=(pod(TRAIN, "train", V.training, state=RUNNING),)),
     "Training", Progress.WORKING, [(Verb.START, 0.0)], ["ConfigMap", "PersistentVolumeClaim"], False, []),
    ("trained by own code: credited commit, compression starts",
     snapshot(ledger=ledger(claim(ClaimState.RESERVED, dispatched="t1", started="t2")),
              jobs={TRAIN: job(TRAIN, "train", V.training, succeeded=1)},
              pods=(pod(TRAIN, "train", V.training, state=DONE, phase="Succeeded", result=TRAIN_RESULT),)),
     "Compressing", Progress.WORKING, [(Verb.COMMIT, CREDITED)], ["ConfigMap", "ConfigMap", "PersistentVolumeClaim"], False,
     []),
    ("compressing", replace(trained(), jobs={**trained().jobs, COMPRESS: job(COMPRESS, "compress", V.version, active=1)},
                            results=children.results_config_map(OWNER, {f"train-{V.training}": json.dumps(TRAIN_RESULT, sort_keys=True)}),
                            pvc=children.artifacts_pvc(OWNER, "256Mi"), **keyed()),
     "Compressing", Progress.WORKING, [], [], False, []),
    ("compressed: Service and Deployment applied", replace(compressed(), pvc=children.artifacts_pvc(OWNER, "256Mi"),
                                                           **keyed()),
     "Deploying", Progress.WORKING, [], ["ConfigMap", "Deployment", "Service"], False, []),
    ("compressed, serving pods' NetworkPolicy not stored yet: it and the Service, no Deployment",
     replace(compressed(), pvc=children.artifacts_pvc(OWNER, "256Mi"), network_policies=ISOLATED_ONLY, **keyed()),
     "Deploying", Progress.WORKING, [], ["ConfigMap", "NetworkPolicy", "Service"], False, []),
    ("serving, steady state: nothing to write", serving(), "Serving", Progress.DONE, [], [], False, []),
    ("serving, scaled to 0 by hand: put back", serving(deployment=served_deployment(replicas=0, available=0)), "Deploying",
     Progress.WORKING, [], ["Deployment"], False, []),
    ("serving, Service deleted: put back", serving(service=None), "Serving", Progress.DONE, [], ["Service"], False, []),
    ("serving, PVC deleted: put back", serving(pvc=None), "Serving", Progress.DONE, [], ["PersistentVolumeClaim"], False, []),
    ("training failed after running: whole claim committed",
     snapshot(ledger=ledger(claim(ClaimState.RESERVED, dispatched="t1", started="t2")),
              jobs={TRAIN: job(TRAIN, "train", V.training, failed=1)},
              pods=(pod(TRAIN, "train", V.training, state={"terminated": {"exitCode": 1, "startedAt": "t"}}, phase="Failed"),)),
     "Failed", Progress.STALLED, [(Verb.COMMIT, 2.0)], ["ConfigMap", "PersistentVolumeClaim"], False, []),
    ("image cannot be pulled: Job stopped",
     snapshot(ledger=ledger(claim(ClaimState.RESERVED, dispatched="t1")), jobs={TRAIN: job(TRAIN, "train", V.training, active=1)},
              pods=({**pod(TRAIN, "train", V.training, state={"waiting": {"reason": "ErrImageNeverPull"}}, phase="Pending"),
                     "status": {"phase": "Pending", "containerStatuses": [{"name": "train", "state": {"waiting": {"reason": "ErrImageNeverPull"}}}]}},)),
     "Failed", Progress.STALLED, [], ["ConfigMap", "PersistentVolumeClaim"], False, [TRAIN]),
    ("released claim: failed until the spec changes", snapshot(ledger=ledger(claim(ClaimState.RELEASED, dispatched="t1"))),
     "Failed", Progress.STALLED, [], [], False, []),
    ("serving, a client removed: the allow-list only, no rollout", serving(spec=NO_CLIENTS), "Serving", Progress.DONE,
     [], ["ConfigMap"], False, []),
    ("serving, forced rotation: the allow-list only, no rollout", serving(rotation="r1"), "Serving", Progress.DONE, [],
     ["ConfigMap"], False, []),
    ("serving, a client's limit is invalid: refused, stalled", serving(client_limits=keys.ClientLimits(invalid={"frontend": "x"})),
     "Serving", Progress.STALLED, [], ["ConfigMap"], False, []),
]


@pytest.mark.parametrize(
    ("state", "phase", "progress", "ledger_verbs", "applied", "train", "stopped"),
    [case[1:] for case in TABLE],
    ids=[case[0] for case in TABLE],
)
def test_decide(state: Snapshot, phase: str, progress: Progress, ledger_verbs: list[tuple[Verb, float]], applied: list[str],
                train: bool, stopped: list[str]) -> None:  # fmt: skip
    decision = decide(state)
    assert decision.outcome is not None
    assert (decision.outcome.phase, decision.outcome.progress) == (phase, progress)
    assert verbs(decision) == ledger_verbs
    assert kinds(decision.apply) == applied
    assert (decision.train is not None) == train
    assert list(decision.stop) == stopped
    assert decision.outcome.fields["version"] == state.versions.version  # the version the status describes


def test_no_pod_runs_before_its_network_policy_and_a_model_that_never_serves_has_no_serving_policy() -> None:
    def applied(decision: Decision) -> list[str]:
        return sorted(f"{obj['kind']}/{obj['metadata']['name']}" for obj in decision.apply)

    granted = decide(snapshot(ledger=ledger(claim(ClaimState.RESERVED)), network_policies={}))
    assert "NetworkPolicy/m-isolated" in applied(granted) and granted.train is None
    assert not any(name.startswith("NetworkPolicy/m-serve") for name in applied(granted))
    training = decide(snapshot(ledger=ledger(claim(ClaimState.RESERVED)), network_policies=ISOLATED_ONLY))
    assert training.train is not None and "NetworkPolicy" not in kinds(training.apply)
    waiting = decide(replace(compressed(), pvc=children.artifacts_pvc(OWNER, "256Mi"), network_policies=ISOLATED_ONLY,
                             **keyed()))  # fmt: skip
    assert "NetworkPolicy/m-serve" in applied(waiting) and "Deployment" not in kinds(waiting.apply)
    exposed = decide(replace(compressed(), pvc=children.artifacts_pvc(OWNER, "256Mi"), **keyed()))
    assert "Deployment" in kinds(exposed.apply) and "NetworkPolicy" not in kinds(exposed.apply)


def test_the_train_job_runs_the_operators_calibration_whatever_a_status_or_report_says() -> None:
    decision = decide(snapshot(ledger=ledger(claim(ClaimState.RESERVED))))
    assert decision.train is not None
    key, recipe = decision.train
    body = recipe()
    args = body["spec"]["template"]["spec"]["containers"][0]["command"]
    flags = {args[i]: args[i + 1] for i in range(2, len(args) - 1, 2)}
    assert key == CONSUMER.key
    assert (float(flags["--noise-multiplier"]), float(flags["--sample-rate"]), int(flags["--steps"])) == (
        CALIBRATION.noise_multiplier, PLAN.sample_rate, PLAN.steps)  # fmt: skip
    assert body["spec"]["template"]["metadata"]["finalizers"] == [children.SETTLEMENT_FINALIZER]


def test_a_user_image_never_lowers_the_charge() -> None:
    state = snapshot(own_code=False, ledger=ledger(claim(ClaimState.RESERVED, dispatched="t1", started="t2")),
                     jobs={TRAIN: job(TRAIN, "train", V.training, succeeded=1)},
                     pods=(pod(TRAIN, "train", V.training, state=DONE, phase="Succeeded",
                               result={**TRAIN_RESULT, "steps": 1, "dataTouched": False}),))  # fmt: skip
    assert verbs(decide(state)) == [(Verb.COMMIT, 2.0)]


def test_a_new_training_version_claims_while_the_served_one_keeps_ready() -> None:
    changed = parse({**RAW, "training": {"epochs": 3}})
    state = replace(serving(), spec=changed)
    decision = decide(state)
    assert verbs(decision) == [(Verb.SUBMIT, 2.0)]
    assert decision.ledger[0].consumer is not None and decision.ledger[0].consumer.version == changed.versions.training
    assert decision.outcome is not None and decision.outcome.ready.status  # the old version answers
    assert decision.outcome.progress is Progress.WORKING  # a GitOps tool waits for the new one
    assert decision.outcome.fields["servingVersion"] == V.version
    assert kinds(decision.apply) == []  # the served Deployment is left as it is


def test_a_left_training_that_runs_finishes_before_the_new_version_claims() -> None:
    changed = parse({**RAW, "training": {"epochs": 3}})
    state = snapshot(spec=changed, ledger=ledger(claim(ClaimState.RESERVED, dispatched="t1", started="t2")),
                     jobs={TRAIN: job(TRAIN, "train", V.training, active=1)},
                     pods=(pod(TRAIN, "train", V.training, state=RUNNING),))  # fmt: skip
    decision = decide(state)
    assert verbs(decision) == []
    assert decision.outcome is not None and decision.outcome.ready.reason == "FinishingPreviousVersion"


def test_a_left_claim_that_never_dispatched_is_released_and_the_new_version_claims() -> None:
    changed = parse({**RAW, "training": {"epochs": 3}})
    decision = decide(snapshot(spec=changed, ledger=ledger(claim(ClaimState.RESERVED))))
    assert verbs(decision) == [(Verb.RELEASE, 0.0), (Verb.SUBMIT, 2.0)]
    assert decision.ledger[0].gone is None


def test_a_compression_change_compresses_again_without_a_claim() -> None:
    changed = parse({**RAW, "compression": {"quantization": "none"}})
    decision = decide(replace(serving(), spec=changed))
    assert verbs(decision) == []
    assert [job["metadata"]["name"] for job in decision.create] == [children.compress_job_name("m", changed.versions.version)]


def test_pods_that_ran_are_let_go_only_with_their_claim_recorded() -> None:
    held = pod(TRAIN, "train", V.training, state=DONE, phase="Succeeded", result=TRAIN_RESULT)
    state = snapshot(ledger=ledger(claim(ClaimState.RESERVED, dispatched="t1")), jobs={TRAIN: job(TRAIN, "train", V.training, succeeded=1)},
                     pods=(held,))  # fmt: skip
    decision = decide(state)
    assert [verb for verb, _ in verbs(decision)] == [Verb.START, Verb.COMMIT]
    assert decision.unhold == ((held["metadata"]["name"], CONSUMER.key, True),)


def test_a_pod_that_only_carries_the_jobs_labels_never_lowers_the_charge() -> None:
    real = pod(TRAIN, "train", V.training, state=DONE, phase="Succeeded", result=TRAIN_RESULT)
    fake = {**pod(TRAIN, "train", V.training, state=DONE, phase="Succeeded", result={**TRAIN_RESULT, "steps": 1}),
            "metadata": {**real["metadata"], "name": "fake", "ownerReferences": []}}  # fmt: skip
    state = snapshot(ledger=ledger(claim(ClaimState.RESERVED, dispatched="t1", started="t2")),
                     jobs={TRAIN: job(TRAIN, "train", V.training, succeeded=1)}, pods=(real, fake))  # fmt: skip
    assert verbs(decide(state)) == [(Verb.COMMIT, 2.0)]


def test_deletion_commits_a_running_training_and_waits_for_its_pods() -> None:
    running = snapshot(deleting=True, ledger=ledger(claim(ClaimState.RESERVED, dispatched="t1", started="t2")),
                       jobs={TRAIN: job(TRAIN, "train", V.training, active=1)},
                       pods=(pod(TRAIN, "train", V.training, state=RUNNING),))  # fmt: skip
    decision = decide_deletion(running)
    assert verbs(decision) == [(Verb.COMMIT, 2.0)] and decision.delete_jobs == (TRAIN,) and not decision.settled
    gone = decide_deletion(replace(running, ledger=ledger(claim(ClaimState.COMMITTED)), jobs={}, pods=()))
    assert gone.settled and verbs(gone) == []


def test_deletion_releases_a_claim_whose_job_never_ran_once_it_is_gone() -> None:
    pending = snapshot(deleting=True, ledger=ledger(claim(ClaimState.RESERVED, dispatched="t1")),
                       jobs={TRAIN: job(TRAIN, "train", V.training, active=1)},
                       pods=({**pod(TRAIN, "train", V.training, state={}, phase="Pending"),
                              "status": {"phase": "Pending"}, "spec": {}},))  # fmt: skip
    decision = decide_deletion(pending)
    assert verbs(decision) == [] and decision.delete_jobs == (TRAIN,) and not decision.settled
    gone = decide_deletion(replace(pending, jobs={}, pods=()))
    assert verbs(gone) == [(Verb.RELEASE, 0.0)] and gone.ledger[0].gone == TRAIN


def test_deletion_waits_on_a_pod_that_may_run_or_is_held_and_not_on_one_that_ended_unheld() -> None:
    """A pod that merely carries a train pod's labels and has ended must not keep the model forever."""
    committed = ledger(claim(ClaimState.COMMITTED))
    ended = pod(TRAIN, "train", V.training, state=DONE, phase="Succeeded", result=TRAIN_RESULT, held=False)
    assert decide_deletion(snapshot(deleting=True, ledger=committed, jobs={}, pods=(ended,))).settled
    held = pod(TRAIN, "train", V.training, state=DONE, phase="Succeeded", result=TRAIN_RESULT)
    assert not decide_deletion(snapshot(deleting=True, ledger=committed, jobs={}, pods=(held,))).settled
    running = pod(TRAIN, "train", V.training, state=RUNNING, held=False)
    assert not decide_deletion(snapshot(deleting=True, ledger=committed, jobs={}, pods=(running,))).settled


# --- the allow-list of client certificates ---------------------------------------------------------


def listed(decision: Decision) -> dict[str, list[str]]:
    """Serials by client in the allow-list the decision applies."""
    (config_map,) = [obj for obj in decision.apply if obj["metadata"]["name"] == children.allow_list_name("m")]
    content = json.loads(config_map["data"][children.ALLOW_LIST_FILE])
    return {entry["name"]: [c["serial"] for c in entry["certificates"]] for entry in content["clients"]}


def serial(secret: Any, key: str = "tls.crt") -> str:
    return format(x509.load_pem_x509_certificate(children.secret_bytes(secret, key)).serial_number, "x")


def test_a_removed_clients_certificate_leaves_the_allow_list_in_the_pass_its_secret_is_deleted() -> None:
    state = serving(spec=NO_CLIENTS)
    decision = decide(state)
    assert list(decision.delete_secrets) == [children.client_secret_name("m", "frontend")]
    assert listed(decision) == {}
    assert kinds(decision.apply) == ["ConfigMap"], "the Deployment must not roll for a new allow-list"


def test_a_forced_rotation_replaces_every_client_certificate_in_the_allow_list() -> None:
    state = serving(rotation="r1")
    old = serial(state.secrets[children.client_secret_name("m", "frontend")])
    decision = decide(state)
    (written,) = [w.body for w in decision.secrets if w.body["metadata"]["name"] == children.client_secret_name("m", "frontend")]
    assert keys.PREVIOUS_CLIENT_CERT not in written["data"], "a forced rotation keeps no previous certificate"
    assert listed(decision) == {"frontend": [serial(written)]} and serial(written) != old
    assert "Deployment" not in kinds(decision.apply)
    # Fed back as stored, the rotation is done: nothing more is written.
    stored = {**state.secrets, **{w.body["metadata"]["name"]: w.body for w in decision.secrets}}
    again = decide(replace(state, secrets=stored, allow_list=next(o for o in decision.apply if o["kind"] == "ConfigMap")))
    assert not again.secrets and not again.apply


def test_a_routine_renewal_keeps_the_replaced_certificate_listed_until_it_expires() -> None:
    state = serving()
    name = children.client_secret_name("m", "frontend")
    old = serial(state.secrets[name])
    later = NOW + timedelta(hours=500)  # less than a third of 720 h left: renewal due
    decision = decide(replace(state, now=later))
    (written,) = [w.body for w in decision.secrets if w.body["metadata"]["name"] == name]
    assert serial(written, keys.PREVIOUS_CLIENT_CERT) == old
    assert listed(decision) == {"frontend": [serial(written), old]}
    assert "Deployment" not in kinds(decision.apply)
    # Once the replaced certificate has expired, it leaves the list.
    stored = {**state.secrets, name: written}
    expired = decide(replace(state, secrets=stored, now=NOW + timedelta(hours=721)))
    assert listed(expired)["frontend"][-1] != old and old not in listed(expired)["frontend"]


def test_client_limits_are_each_pods_share_and_an_invalid_one_refuses_the_client() -> None:
    limits = keys.client_limits({"replicas": 2, "clients": ["frontend"],
                                 "clientLimits": [{"name": "frontend", "requestsPerSecond": 50, "burst": 101}]})  # fmt: skip
    decision = decide(serving(client_limits=limits))
    (config_map,) = [obj for obj in decision.apply if obj["kind"] == "ConfigMap"]
    (entry,) = json.loads(config_map["data"][children.ALLOW_LIST_FILE])["clients"]
    assert entry["rateLimit"] == {"requestsPerSecond": 25.0, "burst": 51}
    invalid = keys.client_limits({"clients": ["frontend"], "clientLimits": [{"name": "frontend", "requestsPerSecond": 0,
                                                                             "burst": 1}]})  # fmt: skip
    decision = decide(serving(client_limits=invalid))
    assert listed(decision) == {"frontend": []}
    assert conditions(decision)["Ready"] == (False, "InvalidClientLimits")
    assert decision.outcome is not None and "client frontend" in decision.outcome.ready.message
