"""A FederatedRound as observed: the typed spec, each silo's budget, ledger and calibration, and the
children as the watches last saw them (plain data; :mod:`.observe` gathers it, :mod:`.decide` reads it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from securemodel.operator.budget.ledger import BudgetRef
from securemodel.operator.federated.calibration import SiloPlan
from securemodel.operator.federated.children import Start
from securemodel.operator.federated.keys import Stored
from securemodel.operator.federated.spec import RoundSpec, SiloSpec
from securemodel.operator.secure_model.children import Owner
from securemodel.privacy import Calibration, Claim, Consumer, Ledger

KIND: Final = "FederatedRound"


@dataclass(frozen=True)
class BudgetView:
    """What a silo's PrivacyBudget allows: ``spec.data.sources`` and ``spec.consumers``."""

    sources: tuple[str, ...] = ()
    consumers: tuple[Mapping[str, str], ...] = ()

    @classmethod
    def of(cls, spec: Mapping[str, Any]) -> BudgetView:
        data = spec.get("data") or {}
        return cls(tuple(data.get("sources") or ()), tuple(dict(c) for c in spec.get("consumers") or ()))


@dataclass(frozen=True)
class Silo:
    """One silo as observed: its budget (None: missing), that budget's ledger, its calibration, its children."""

    spec: SiloSpec
    budget: BudgetView | None
    ledger: Ledger | None
    plan: SiloPlan | None = None
    calibration: Calibration | None = None
    error: str | None = None  # the data cannot be sized, or the target ε cannot be met
    job: Mapping[str, Any] | None = None  # its SuperNode Job
    pods: tuple[Mapping[str, Any], ...] = ()  # its SuperNode pods

    @property
    def ref(self) -> BudgetRef:
        return BudgetRef(self.spec.namespace, self.spec.budget_ref)


@dataclass(frozen=True)
class StartProblem:
    """Why the starting model cannot be used (yet): ``stalled`` until someone changes something."""

    reason: str
    message: str
    stalled: bool = True


@dataclass(frozen=True)
class Snapshot:
    """Everything :func:`decide` reads, gathered by :mod:`.observe`."""

    owner: Owner
    generation: int
    deleting: bool
    finalized: bool  # kopf's finalizer is on the round
    spec: RoundSpec
    start: Start | StartProblem
    silos: tuple[Silo, ...]
    aggregator: Mapping[str, Any] | None  # the aggregator Job
    aggregator_pods: tuple[Mapping[str, Any], ...]
    service: Mapping[str, Any] | None
    pvc: Mapping[str, Any] | None
    results: Mapping[str, Any] | None  # the results ConfigMap
    secrets: Stored  # the round's Secrets by (namespace, name), the silos' included
    image: str
    now: datetime
    artifacts_storage: str = "256Mi"

    def consumer(self, silo: SiloSpec) -> Consumer:
        return Consumer(KIND, self.owner.namespace, self.owner.name, self.owner.uid, silo.name)

    def claim(self, silo: Silo) -> Claim | None:
        return silo.ledger.claim(self.consumer(silo.spec).key) if silo.ledger is not None else None


