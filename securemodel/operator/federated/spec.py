"""A FederatedRound's spec, parsed once into typed values with the CRD's defaults (pure).

The spec is immutable (a CEL rule), so a round has exactly one claim per silo and needs no
versions: each silo's claim is keyed ``<round uid>/<silo name>`` on the silo's own budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from securemodel.crypto.pki import parse_lifetime

@dataclass(frozen=True)
class SiloSpec:
    """One ``spec.clients`` entry, its namespace defaulted to the round's."""

    name: str
    namespace: str
    source: str
    budget_ref: str
    samples: int | None = None


@dataclass(frozen=True)
class RoundSpec:
    """The whole spec of a FederatedRound, defaults filled in."""

    silos: tuple[SiloSpec, ...]
    epsilon: float
    secure_model_ref: str | None = None
    from_round: str | None = None
    rounds: int = 1
    min_clients: int = 0  # silos that must submit in each round (parse: every silo when unset)
    local_epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.1
    delta: float = 1.0e-5
    max_grad_norm: float = 1.0
    accountant: str = "prv"
    secure_aggregation: bool = True
    num_shares: int = 0  # SecAgg+ shares per key (parse: every silo when unset)
    threshold: int = 0  # SecAgg+ reconstruction threshold (parse: min_clients when unset)
    timeout_seconds: int = 600  # one FedAvg round
    evaluation: str | None = None  # spec.evaluation.source: public data the aggregator evaluates on (None: no accuracy)


def parse(spec: Mapping[str, Any], namespace: str) -> RoundSpec:
    """The typed spec of a round in ``namespace``, every default resolved (so that setting a field to its
    default and leaving it out parse the same).

    Raises:
        KeyError: if a required field is missing (the CRD schema makes that impossible in the cluster).
    """
    model = spec["model"]
    training = spec.get("training") or {}
    privacy = spec["privacy"]
    secure = spec.get("secureAggregation") or {}
    silos = tuple(
        SiloSpec(
            name=str(entry["name"]),
            namespace=str(entry.get("namespace") or namespace),
            source=str(entry["data"]["source"]),
            budget_ref=str(entry["budgetRef"]),
            samples=int(entry["data"]["samples"]) if entry["data"].get("samples") is not None else None,
        )
        for entry in spec["clients"]
    )
    min_clients = int(spec.get("minClients") or len(silos))
    return RoundSpec(
        silos=silos,
        epsilon=float(privacy["epsilon"]),
        secure_model_ref=model.get("secureModelRef"),
        from_round=model.get("fromRound"),
        rounds=int(spec.get("rounds", RoundSpec.rounds)),
        min_clients=min_clients,
        local_epochs=int(training.get("localEpochs", RoundSpec.local_epochs)),
        batch_size=int(training.get("batchSize", RoundSpec.batch_size)),
        learning_rate=float(training.get("learningRate", RoundSpec.learning_rate)),
        delta=float(privacy.get("delta", RoundSpec.delta)),
        max_grad_norm=float(privacy.get("maxGradNorm", RoundSpec.max_grad_norm)),
        accountant=str(privacy.get("accountant", RoundSpec.accountant)),
        secure_aggregation=bool(secure.get("enabled", RoundSpec.secure_aggregation)),
        num_shares=int(secure.get("numShares") or len(silos)),
        threshold=int(secure.get("threshold") or min_clients),
        timeout_seconds=int(parse_lifetime(str(spec.get("timeout", "10m"))).total_seconds()),
        evaluation=str(spec["evaluation"]["source"]) if spec.get("evaluation") else None,
    )
