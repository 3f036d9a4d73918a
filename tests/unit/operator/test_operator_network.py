"""The NetworkPolicies of a SecureModel and a FederatedRound: exact shapes, and selectors that pick
exactly the pods the children builders label (label selectors evaluated as the API defines them)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from securemodel.operator.federated import children as federated
from securemodel.operator.federated.children import Start
from securemodel.operator.federated.spec import parse as parse_round
from securemodel.operator.secure_model import children, network
from securemodel.operator.secure_model.children import COMPONENT_LABEL, UID_LABEL, Owner, Run
from securemodel.operator.secure_model.spec import parse as parse_model

ADDONS = Path(__file__).parents[3] / "hack" / "cluster" / "addons.yaml"
MODEL = Owner("tumor", "clinic-a", "uid-m")
OTHER_MODEL = Owner("tumor", "clinic-a", "uid-other")
MODEL_SPEC = parse_model(
    {
        "model": {"architecture": "mlp", "params": {"hidden": [8]}},
        "data": {"source": "builtin://breast_cancer"},
        "privacy": {"budgetRef": "b", "epsilon": 2.0, "delta": 1e-5, "maxGradNorm": 1.0, "accountant": "prv"},
        "training": {"epochs": 2, "batchSize": 64, "learningRate": 0.1, "optimizer": "sgd", "seed": 3},
        "compression": {"pruning": {"sparsity": 0.5}, "quantization": "int8"},
        "serving": {"replicas": 2, "clients": ["frontend"], "certificateLifetime": "720h"},
        "resources": {"gpus": 0, "cpu": "1", "memory": "2Gi"},
    }
)
ROUND = Owner("r1", "research", "uid-r")
ROUND_SPEC = parse_round(
    {
        "model": {"secureModelRef": "tumor"},
        "clients": [
            {"name": "clinic-a", "namespace": "clinic-a", "data": {"source": "pvc://records/a.npz", "samples": 160},
             "budgetRef": "bc"},  # fmt: skip
            {"name": "clinic-b", "data": {"source": "builtin://breast_cancer?shard=1&of=3"}, "budgetRef": "bc"},
        ],
        "rounds": 2,
        "privacy": {"epsilon": 1.0},
        "timeout": "5m",
    },
    "research",
)
BOTH = ["Ingress", "Egress"]


def matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A LabelSelector as the API evaluates it (an empty selector matches everything)."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for requirement in selector.get("matchExpressions", []):
        key, operator, values = requirement["key"], requirement["operator"], requirement.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not ok:
            return False
    return True


def namespace_labels(name: str) -> dict[str, str]:
    """What the API server puts on every namespace."""
    return {"kubernetes.io/metadata.name": name}


def template(workload: Mapping[str, Any]) -> Mapping[str, Any]:
    return workload["spec"]["template"]


def container_ports(workload: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {port["name"]: port for port in template(workload)["spec"]["containers"][0].get("ports", [])}


def model_pods(owner: Owner) -> dict[str, Mapping[str, Any]]:
    """The pod templates of every workload a SecureModel runs."""
    versions = MODEL_SPEC.versions
    return {
        "train": template(children.train_job(owner, MODEL_SPEC, versions.training, Run(1.2, 0.1, 10), "img")),
        "compress": template(children.compress_job(owner, MODEL_SPEC, versions, "img")),
        "serve": template(children.deployment(owner, MODEL_SPEC, versions, "img", "sha256:" + "ab" * 32)),
    }


def selected(policy: Mapping[str, Any], pods: Mapping[str, Mapping[str, Any]]) -> set[str]:
    return {name for name, pod in pods.items() if matches(policy["spec"]["podSelector"], pod["metadata"]["labels"])}


def test_train_and_compress_pods_get_no_connection_at_all() -> None:
    policy = network.isolated_policy(MODEL)
    assert policy["spec"] == {
        "podSelector": {
            "matchLabels": {UID_LABEL: "uid-m"},
            "matchExpressions": [{"key": COMPONENT_LABEL, "operator": "In", "values": ["compress", "train"]}],
        },
        "policyTypes": BOTH,
    }
    assert selected(policy, model_pods(MODEL)) == {"train", "compress"}
    assert selected(policy, model_pods(OTHER_MODEL)) == set()


@pytest.mark.parametrize("metrics_namespace", [None, ""])
def test_serving_pods_answer_only_on_the_mtls_port_without_a_metrics_namespace(metrics_namespace: str | None) -> None:
    policy = network.serving_policy(MODEL, metrics_namespace)
    assert policy["spec"] == {
        "podSelector": {"matchLabels": {UID_LABEL: "uid-m", COMPONENT_LABEL: "serve"}},
        "policyTypes": BOTH,
        "ingress": [{"ports": [{"protocol": "TCP", "port": children.SERVE_PORT}]}],
    }
    assert selected(policy, model_pods(MODEL)) == {"serve"}
    assert selected(policy, model_pods(OTHER_MODEL)) == set()


def test_serving_pods_answer_metrics_only_to_the_configured_namespace_and_reach_nothing() -> None:
    policy = network.serving_policy(MODEL, "monitoring")
    https, metrics = policy["spec"]["ingress"]
    assert https == {"ports": [{"protocol": "TCP", "port": children.SERVE_PORT}]}
    assert metrics == {
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        "ports": [{"protocol": "TCP", "port": children.METRICS_PORT}],
    }
    (peer,) = metrics["from"]
    assert matches(peer["namespaceSelector"], namespace_labels("monitoring"))
    assert not matches(peer["namespaceSelector"], namespace_labels("clinic-a"))
    assert "egress" not in policy["spec"] and policy["spec"]["policyTypes"] == BOTH
    # The ports the policy opens are the ones the serving container listens on.
    ports = container_ports(children.deployment(MODEL, MODEL_SPEC, MODEL_SPEC.versions, "img"))
    assert (ports["https"]["containerPort"], ports["metrics"]["containerPort"]) == (
        https["ports"][0]["port"],
        metrics["ports"][0]["port"],
    )


def test_a_models_policies_are_its_children() -> None:
    policies = [network.isolated_policy(MODEL), network.serving_policy(MODEL, "monitoring")]
    assert [p["metadata"]["name"] for p in policies] == ["tumor-isolated", "tumor-serve"]
    for policy in policies:
        assert policy["apiVersion"] == "networking.k8s.io/v1" and policy["kind"] == "NetworkPolicy"
        assert policy["metadata"]["namespace"] == "clinic-a"
        assert policy["metadata"]["ownerReferences"] == [children.owner_reference(MODEL)]
        assert policy["metadata"]["labels"] == children.labels(MODEL, network.COMPONENT)
    # Every pod the model runs is covered by exactly one policy.
    pods = model_pods(MODEL)
    assert sorted(name for policy in policies for name in selected(policy, pods)) == sorted(pods)


def round_pods() -> dict[str, Mapping[str, Any]]:
    """The pod templates of a round's aggregator and of each silo's SuperNode (with their namespaces)."""
    start = Start(architecture="mlp", source="builtin://breast_cancer")
    jobs = {"aggregator": federated.aggregator_job(ROUND, ROUND_SPEC, start, 100, "img")}
    for silo in ROUND_SPEC.silos:
        jobs[silo.name] = federated.supernode_job(ROUND, ROUND_SPEC, silo, Run(2.5, 0.2, 10), 5, "img")
    return {name: {**template(job), "namespace": job["metadata"]["namespace"]} for name, job in jobs.items()}


def allowed_peers(rule: Mapping[str, Any], pods: Mapping[str, Mapping[str, Any]], key: str) -> set[str]:
    """The pods a rule's peers (``from`` or ``to``) select, namespace and pod selector together."""
    return {
        name
        for name, pod in pods.items()
        for peer in rule[key]
        if matches(peer["namespaceSelector"], namespace_labels(pod["namespace"]))
        and matches(peer["podSelector"], pod["metadata"]["labels"])
    }


def test_the_aggregator_is_reached_only_by_the_rounds_supernodes_on_the_fleet_port() -> None:
    policy = network.aggregator_policy(ROUND, ROUND_SPEC)
    pods = round_pods()
    assert selected(policy, pods) == {"aggregator"}
    assert policy["spec"]["policyTypes"] == BOTH and "egress" not in policy["spec"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 9092}]
    assert container_ports({"spec": {"template": pods["aggregator"]}})["fleet"]["containerPort"] == 9092
    assert allowed_peers(rule, pods, "from") == {"clinic-a", "clinic-b"}
    (peer,) = rule["from"]
    assert peer["namespaceSelector"]["matchExpressions"][0]["values"] == ["clinic-a", "research"]
    # Another round's SuperNodes, in the same namespaces, are not let in.
    other = Owner("r1", "research", "uid-other")
    stranger = template(federated.supernode_job(other, ROUND_SPEC, ROUND_SPEC.silos[0], Run(2.5, 0.2, 10), 5, "img"))
    assert not matches(peer["podSelector"], stranger["metadata"]["labels"])
    assert policy["metadata"]["namespace"] == "research"
    assert policy["metadata"]["ownerReferences"] == [federated.owner_reference(ROUND)]


def coredns() -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """The local cluster's CoreDNS pods: their labels and named ports (hack/cluster/addons.yaml)."""
    for doc in yaml.safe_load_all(ADDONS.read_text().replace("@", "")):
        if doc and doc["kind"] == "Deployment" and doc["metadata"]["name"] == "coredns":
            return template(doc)["metadata"]["labels"], container_ports(doc)
    raise AssertionError("no CoreDNS Deployment in addons.yaml")


def test_a_supernode_reaches_only_its_rounds_aggregator_and_the_cluster_dns() -> None:
    silo = ROUND_SPEC.silos[0]
    policy = network.supernode_policy(ROUND, silo)
    pods = round_pods()
    assert selected(policy, pods) == {"clinic-a"}
    assert policy["spec"]["policyTypes"] == BOTH and "ingress" not in policy["spec"]
    fleet, dns = policy["spec"]["egress"]
    assert fleet["ports"] == [{"protocol": "TCP", "port": 9092}]
    assert allowed_peers(fleet, pods, "to") == {"aggregator"}
    # The address the SuperNode dials is the round's Service, whose selector picks that same pod.
    assert federated.superlink_address(ROUND) == "r1-superlink.research.svc:9092"
    service = federated.service(ROUND)
    assert matches({"matchLabels": service["spec"]["selector"]}, pods["aggregator"]["metadata"]["labels"])
    # DNS: the cluster's CoreDNS pods in kube-system, by the port names they declare.
    labels, ports = coredns()
    dns_pods = {"coredns": {"namespace": "kube-system", "metadata": {"labels": labels}}}
    assert allowed_peers(dns, dns_pods, "to") == {"coredns"}
    assert allowed_peers(dns, {**pods, "coredns-elsewhere": {**dns_pods["coredns"], "namespace": "research"}}, "to") == set()
    assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {(p["protocol"], name) for name, p in ports.items()}
    assert policy["metadata"]["namespace"] == "clinic-a" and "ownerReferences" not in policy["metadata"]
    assert policy["metadata"]["labels"][federated.SILO_LABEL] == "clinic-a"


def test_a_rounds_policies_cover_every_pod_it_runs_once() -> None:
    policies = network.round_policies(ROUND, ROUND_SPEC)
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in policies] == [
        ("research", "r1-aggregator"),
        ("clinic-a", "r1-clinic-a"),
        ("research", "r1-clinic-b"),
    ]
    pods = round_pods()
    covered = sorted(
        name
        for policy in policies
        for name in selected(policy, pods)
        if pods[name]["namespace"] == policy["metadata"]["namespace"]
    )
    assert covered == sorted(pods)
