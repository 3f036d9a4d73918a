"""A FederatedRound's spec parsing and the manifests of its children (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from securemodel.api.crd import crd
from securemodel.api.federated_round import KIND
from securemodel.operator.federated import children
from securemodel.operator.federated.calibration import silo_plan
from securemodel.operator.federated.children import Start
from securemodel.operator.federated.spec import parse
from securemodel.operator.secure_model.children import SETTLEMENT_FINALIZER, Owner, Run
from securemodel.privacy import steps_for_epochs

OWNER = Owner("r1", "research", "uid-r")
RAW: dict[str, Any] = {
    "model": {"secureModelRef": "tumor"},
    "clients": [
        {"name": "clinic-a", "namespace": "clinic-a", "data": {"source": "pvc://records/a.npz", "samples": 160},
         "budgetRef": "bc"},
        {"name": "clinic-b", "data": {"source": "builtin://breast_cancer?shard=1&of=3"}, "budgetRef": "bc"},
    ],
    "rounds": 2,
    "privacy": {"epsilon": 1.0},
    "timeout": "5m",
}
SPEC = parse(RAW, "research")


def test_parse_fills_the_crd_defaults_and_the_silos_namespace() -> None:
    assert [s.namespace for s in SPEC.silos] == ["clinic-a", "research"]
    assert SPEC.silos[0].samples == 160 and SPEC.silos[1].samples is None
    assert SPEC.evaluation is None
    assert (SPEC.rounds, SPEC.min_clients, SPEC.threshold, SPEC.timeout_seconds) == (2, 2, 2, 300)
    assert (SPEC.local_epochs, SPEC.batch_size, SPEC.learning_rate, SPEC.delta, SPEC.secure_aggregation) == (1, 32, 0.1, 1e-5, True)
    assert parse({**RAW, "rounds": 1, "minClients": 2, "secureAggregation": {"enabled": True}}, "x") == parse(
        {k: v for k, v in RAW.items() if k != "rounds"} | {"rounds": 1}, "x")


def test_a_silos_noise_is_calibrated_for_all_its_steps_over_all_rounds() -> None:
    plan = silo_plan(SPEC, SPEC.silos[0])  # all of its 160 examples (nothing held out): q = 32/160
    assert plan.examples == 160 and plan.steps_per_round == steps_for_epochs(1, 32, 160) == 5
    assert plan.plan.sample_rate == 0.2 and plan.plan.steps == 10


def test_a_batch_larger_than_a_silos_data_is_refused() -> None:
    big = parse({**RAW, "training": {"batchSize": 1000}}, "research")
    with pytest.raises(ValueError, match="batchSize"):
        silo_plan(big, big.silos[1])


def _pod(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


def _restricted(pod: dict[str, Any]) -> None:
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    for c in pod["containers"]:
        ctx = c["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False and ctx["capabilities"]["drop"] == ["ALL"]
        assert ctx["readOnlyRootFilesystem"] and ctx["runAsNonRoot"]
    kinds = {key for v in pod["volumes"] for key in v if key != "name"}
    assert kinds <= {"emptyDir", "secret", "persistentVolumeClaim"}  # restricted: no hostPath and the like


def test_the_aggregator_is_restricted_and_mounts_no_silo_data_nor_silo_secret() -> None:
    start = Start(architecture="mlp", params='{"hidden":[8]}', source="builtin://breast_cancer?shard=1&of=3")
    job = children.aggregator_job(OWNER, SPEC, start, 160, "securemodel-worker:dev")
    pod = _pod(job)
    _restricted(pod)
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    secrets = [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]
    assert claims == ["r1-artifacts"] and "records" not in claims
    assert sorted(secrets) == ["r1-data-key", "r1-silo-keys", "r1-superlink-tls"]
    args = pod["containers"][0]["command"]
    assert args[:2] == ["securemodel-worker", "fl-aggregate"] and "--initial-architecture" in args
    assert args[args.index("--threshold") + 1] == "2" and args[args.index("--timeout") + 1] == "600"
    assert job["spec"]["backoffLimit"] == 0 and job["metadata"]["ownerReferences"][0]["kind"] == "FederatedRound"


def test_the_aggregator_evaluates_on_the_public_source_only_when_one_is_declared() -> None:
    start = Start(architecture="mlp", params="{}", source="builtin://breast_cancer?shard=1&of=3")
    raw = {**RAW, "clients": RAW["clients"][1:] + [{"name": "clinic-c", "budgetRef": "bc",
                                                     "data": {"source": "builtin://breast_cancer?shard=2&of=3"}}]}
    spec = parse({**raw, "evaluation": {"source": "builtin://breast_cancer?part=evaluation"}}, "research")
    assert spec.evaluation == "builtin://breast_cancer?part=evaluation"
    pod = _pod(children.aggregator_job(OWNER, spec, start, 152, "img"))
    args = pod["containers"][0]["command"]
    assert args[args.index("--evaluation-source") + 1] == "builtin://breast_cancer?part=evaluation"
    assert [args[i + 1] for i, a in enumerate(args) if a == "--silo-source"] == [s.source for s in spec.silos]
    assert [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v] == [
        "r1-artifacts"]  # the public part is in the image: no data volume
    without = _pod(children.aggregator_job(OWNER, parse(raw, "research"), start, 152, "img"))
    assert not [a for a in without["containers"][0]["command"] if "evaluation" in a or a == "--silo-source"]


def test_a_round_from_a_previous_round_mounts_its_volume_read_only_and_its_key() -> None:
    start = Start(previous_round="r0", previous_artifact="/artifacts/round-003.model", previous_uid="uid-r0",
                  previous_rounds=3)  # fmt: skip
    pod = _pod(children.aggregator_job(OWNER, SPEC, start, 160, "img"))
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["start"]["persistentVolumeClaim"] == {"claimName": "r0-artifacts", "readOnly": True}
    assert volumes["start-key"]["secret"]["secretName"] == "r0-data-key"
    args = pod["containers"][0]["command"]
    assert args[args.index("--initial-model") + 1] == "/start/round-003.model"
    # the previous round's final model is authenticated as bound to its uid and spec.rounds
    assert args[args.index("--initial-round-uid") + 1 :][:3] == ["uid-r0", "--initial-round", "3"]


def test_the_aggregator_binds_every_global_model_to_this_rounds_uid() -> None:
    for start in (Start(architecture="mlp", source="builtin://breast_cancer"),
                  Start(previous_round="r0", previous_artifact="/artifacts/round-001.model", previous_uid="uid-r0",
                        previous_rounds=1)):  # fmt: skip
        args = _pod(children.aggregator_job(OWNER, SPEC, start, 160, "img"))["containers"][0]["command"]
        assert args[args.index("--round-uid") + 1] == "uid-r"


def test_a_silo_pod_mounts_only_its_own_data_and_key_and_runs_the_claimed_mechanism() -> None:
    silo = SPEC.silos[0]
    job = children.supernode_job(OWNER, SPEC, silo, Run(2.5, 0.2, 10), 5, "securemodel-worker:dev")
    pod = _pod(job)
    _restricted(pod)
    assert job["metadata"]["namespace"] == "clinic-a" and "ownerReferences" not in job["metadata"]
    assert job["spec"]["template"]["metadata"]["finalizers"] == [SETTLEMENT_FINALIZER]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "records", "readOnly": True}
    assert volumes["supernode"]["secret"]["secretName"] == "r1-clinic-a-supernode"
    args = pod["containers"][0]["command"]
    flags = dict(zip(args[2::2], args[3::2], strict=False))
    assert flags["--noise-multiplier"] == "2.5" and flags["--sample-rate"] == "0.2"
    assert flags["--steps-per-round"] == "5" and flags["--rounds"] == "2"
    assert flags["--superlink"] == "r1-superlink.research.svc:9092"
    assert not [a for a in args if "validation" in a or "split" in a or "evaluation" in a]  # trains on all, evaluates nothing
    with pytest.raises(AssertionError):
        children.supernode_job(OWNER, SPEC, silo, Run(2.5, 0.2, 11), 5, "img")


def test_a_builtin_silo_mounts_no_data_volume() -> None:
    pod = _pod(children.supernode_job(OWNER, SPEC, SPEC.silos[1], Run(2.5, 0.27, 8), 4, "img"))
    assert {v["name"] for v in pod["volumes"]} == {"tmp", "work", "supernode"}


def test_job_names_fit_a_label() -> None:
    assert len(children.supernode_job_name("r" * 40, "s" * 22)) == 63


def test_the_crd_carries_the_secure_aggregation_rules_and_columns() -> None:
    version = crd(KIND)["spec"]["versions"][0]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = " ".join(r["rule"] for r in spec["x-kubernetes-validations"])
    assert "2 * " in rules and "numShares" in rules and "self.secureAggregation.threshold <= self.minClients" in rules
    assert spec["properties"]["rounds"]["default"] == 1
    assert "self.evaluation.source == c.data.source.find(" in rules
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert {"Round", "Submitted", "Accuracy"} <= set(columns)
    assert "public spec.evaluation" in columns["Accuracy"]["description"]
    accuracy = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["model"]["properties"]["accuracy"]
    assert "public data" in accuracy["description"]


def test_round_pods_wait_for_their_network_policy_first() -> None:
    start = Start(previous_round="r0", previous_artifact="/artifacts/round-003.model")
    plan = Run(noise_multiplier=1.0, sample_rate=0.1, steps=4)
    for pod in (_pod(children.aggregator_job(OWNER, SPEC, start, 160, "img")),
                _pod(children.supernode_job(OWNER, SPEC, SPEC.silos[0], plan, 2, "img"))):  # fmt: skip
        assert pod["initContainers"][0]["command"][:2] == ["securemodel-worker", "await-isolation"]
