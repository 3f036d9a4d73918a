"""The NetworkPolicies that give a SecureModel's and a FederatedRound's pods exactly the connections
they need, built as plain dicts (pure: no API calls).

Every policy lists both policy types, so a pod it selects has no connection of a direction the
policy does not allow, and selects pods by the owner's uid label and the component label that
:mod:`securemodel.operator.secure_model.children` and :mod:`securemodel.operator.federated.children`
put on them:

* train and compress pods (which read volumes and write their termination log only): no ingress
  and no egress, not even DNS;
* serving pods: ingress on the mTLS port from anywhere, on the metrics port only from the pods of
  one configured namespace (none without it), and no egress;
* a round's aggregator (the SuperLink): ingress on the Fleet port only from the round's SuperNode
  pods in the silos' namespaces, and no egress (its Flower processes talk over loopback);
* a silo's SuperNode: egress only to the round's aggregator on the Fleet port and to the cluster
  DNS (it reaches the SuperLink by its Service's name), and no ingress.

Loopback traffic inside a pod is never subject to a NetworkPolicy, and the kubelet's probes come
from the node, which NetworkPolicy implementations let through. Peers are matched by namespace
name through the ``kubernetes.io/metadata.name`` label the API server sets on every namespace.
"""

from __future__ import annotations

from typing import Any, Final

from securemodel.operator.federated import children as federated
from securemodel.operator.federated.spec import RoundSpec, SiloSpec
from securemodel.operator.secure_model.children import (
    COMPONENT_LABEL,
    METRICS_PORT,
    SERVE_PORT,
    UID_LABEL,
    Owner,
    metadata,
)
from securemodel.workers.federated.arguments import SUPERLINK_PORT

NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"
COMPONENT: Final = "network-policy"
BOTH_DIRECTIONS: Final = ("Ingress", "Egress")
ISOLATED_COMPONENTS: Final = ("compress", "train")
# The cluster DNS by the conventions every kubeadm-style cluster keeps (CoreDNS's pods and port
# names); named ports match the pods' own port, whatever port the kube-dns Service forwards to.
DNS_NAMESPACE: Final = "kube-system"
DNS_POD_LABELS: Final = {"k8s-app": "kube-dns"}
DNS_PORTS: Final = ({"protocol": "UDP", "port": "dns"}, {"protocol": "TCP", "port": "dns-tcp"})


def isolated_policy_name(model: str) -> str:
    return f"{model}-isolated"


def serving_policy_name(model: str) -> str:
    return f"{model}-serve"


def aggregator_policy_name(round_name: str) -> str:
    return f"{round_name}-{federated.AGGREGATOR}"


def supernode_policy_name(round_name: str, silo: str) -> str:
    return f"{round_name}-{silo}"


def _policy(meta: dict[str, Any], pod_selector: dict[str, Any], **rules: list[dict[str, Any]]) -> dict[str, Any]:
    """A NetworkPolicy for both directions; a direction without rules (omitted, as the API stores it) allows nothing."""
    spec: dict[str, Any] = {"podSelector": pod_selector, "policyTypes": list(BOTH_DIRECTIONS)}
    spec.update({direction: rule for direction, rule in rules.items() if rule})
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta, "spec": spec}


def _tcp(port: int) -> dict[str, Any]:
    return {"protocol": "TCP", "port": port}


def _namespace(name: str) -> dict[str, Any]:
    return {"matchLabels": {NAMESPACE_NAME_LABEL: name}}


# --- SecureModel -------------------------------------------------------------------------------


def isolated_policy(owner: Owner) -> dict[str, Any]:
    """The model's train and compress pods: no ingress, no egress."""
    selector = {
        "matchLabels": {UID_LABEL: owner.uid},
        "matchExpressions": [{"key": COMPONENT_LABEL, "operator": "In", "values": list(ISOLATED_COMPONENTS)}],
    }
    return _policy(metadata(owner, isolated_policy_name(owner.name), COMPONENT), selector)


def serving_policy(owner: Owner, metrics_namespace: str | None) -> dict[str, Any]:
    """The model's serving pods: the mTLS port from anywhere, the metrics port from ``metrics_namespace``
    only (from nowhere without it), no egress."""
    ingress: list[dict[str, Any]] = [{"ports": [_tcp(SERVE_PORT)]}]
    if metrics_namespace:
        ingress.append({"from": [{"namespaceSelector": _namespace(metrics_namespace)}], "ports": [_tcp(METRICS_PORT)]})
    selector = {"matchLabels": {UID_LABEL: owner.uid, COMPONENT_LABEL: "serve"}}
    return _policy(metadata(owner, serving_policy_name(owner.name), COMPONENT), selector, ingress=ingress)


# --- FederatedRound ----------------------------------------------------------------------------


def _round_pods(owner: Owner, component: str, **extra: str) -> dict[str, Any]:
    return {"matchLabels": {federated.ROUND_UID_LABEL: owner.uid, COMPONENT_LABEL: component, **extra}}


def aggregator_policy(owner: Owner, spec: RoundSpec) -> dict[str, Any]:
    """The round's aggregator pod: the Fleet port from the round's SuperNode pods in the silos' namespaces
    only, no egress. In the round's namespace, owned by the round."""
    silos = {
        "namespaceSelector": {
            "matchExpressions": [
                {
                    "key": NAMESPACE_NAME_LABEL,
                    "operator": "In",
                    "values": sorted({silo.namespace for silo in spec.silos}),
                }
            ]
        },
        "podSelector": _round_pods(owner, federated.SUPERNODE),
    }
    meta = federated.metadata(owner, aggregator_policy_name(owner.name), COMPONENT)
    ingress: list[dict[str, Any]] = [{"from": [silos], "ports": [_tcp(SUPERLINK_PORT)]}]
    return _policy(meta, _round_pods(owner, federated.AGGREGATOR), ingress=ingress)


def supernode_policy(owner: Owner, silo: SiloSpec) -> dict[str, Any]:
    """One silo's SuperNode pod: egress to the round's aggregator on the Fleet port and to the cluster DNS
    only, no ingress. In the silo's namespace with the round's labels and no ownerReference (it cannot
    cross namespaces): the operator deletes it with the silo's other children."""
    aggregator = {"namespaceSelector": _namespace(owner.namespace), "podSelector": _round_pods(owner, federated.AGGREGATOR)}
    dns = {"namespaceSelector": _namespace(DNS_NAMESPACE), "podSelector": {"matchLabels": dict(DNS_POD_LABELS)}}
    egress: list[dict[str, Any]] = [
        {"to": [aggregator], "ports": [_tcp(SUPERLINK_PORT)]},
        {"to": [dns], "ports": [dict(port) for port in DNS_PORTS]},
    ]
    meta = federated.metadata(owner, supernode_policy_name(owner.name, silo.name), COMPONENT, silo.namespace,
                              **{federated.SILO_LABEL: silo.name})  # fmt: skip
    return _policy(meta, _round_pods(owner, federated.SUPERNODE, **{federated.SILO_LABEL: silo.name}), egress=egress)


def round_policies(owner: Owner, spec: RoundSpec) -> list[dict[str, Any]]:
    """Every NetworkPolicy of a FederatedRound: its aggregator's, then one per silo (in the silo's namespace)."""
    return [aggregator_policy(owner, spec), *(supernode_policy(owner, silo) for silo in spec.silos)]
