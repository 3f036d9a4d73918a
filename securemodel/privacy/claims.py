"""The privacy-budget ledger as plain data, mirroring ``PrivacyBudget`` (DESIGN.md section 1).

``BudgetSpec`` mirrors ``spec``; ``Ledger`` mirrors the ledger part of
``status`` (``claims`` and ``epsilonUnlocked``); :func:`status_fields` writes
the status fields back, with the totals. Everything here is immutable; the
rules that change a ledger are in :mod:`securemodel.privacy.ledger`.

Epsilon amounts are stored as floats, as they are in the API object, and are
added and compared exactly: each float is read as the decimal it prints as
(``0.1`` is one tenth), so ten claims of 0.1 fit a budget of 1.0 exactly.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from securemodel.api.privacy_budget import DEFAULT_UNLOCK_STEPS, ClaimState, RejectionReason
from securemodel.privacy._checks import require_delta, require_int, require_positive
from securemodel.privacy.scheduling import Policy, validate_policy

DEFAULT_POLICY: Policy = "fcfs"


@dataclass(frozen=True)
class Consumer:
    """The object a claim is for. ``key`` identifies the claim: the object's ``uid``, and for an
    object that claims once per version of its spec (a SecureModel retrained after a change)
    that ``version`` too."""

    kind: str
    namespace: str
    name: str
    uid: str
    version: str = ""

    def __post_init__(self) -> None:
        if not self.uid:
            raise ValueError("a consumer needs a uid")

    @property
    def key(self) -> str:
        """The claim's key in the ledger: ``uid``, or ``uid/version``."""
        return f"{self.uid}/{self.version}" if self.version else self.uid

    def __str__(self) -> str:
        version = f" version {self.version}" if self.version else ""
        return f"{self.kind} {self.namespace}/{self.name}{version}"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Consumer:
        return cls(
            str(data["kind"]), str(data["namespace"]), str(data["name"]), str(data["uid"]), str(data.get("version", ""))
        )

    def to_dict(self) -> dict[str, str]:
        data = {"kind": self.kind, "namespace": self.namespace, "name": self.name, "uid": self.uid}
        if self.version:
            data["version"] = self.version
        return data


@dataclass(frozen=True)
class Claim:
    """One ledger entry: a consumer's claim of ``epsilon`` at ``delta``.

    For a Committed claim ``epsilon`` is what was spent. ``updated`` is the
    RFC 3339 time of the last state change; ``reason`` is set on Rejected claims.

    Settlement marks, written only by the operator: ``dispatched`` is the time the operator
    recorded, *before* creating it, that the consumer's pod-running workload (the train Job)
    may exist; ``started`` the time it first saw a container of that workload run (the
    kubelet's report). A started claim can never be released (:func:`~securemodel.privacy.ledger.release`).
    """

    consumer: Consumer
    epsilon: float
    delta: float
    state: ClaimState
    updated: str
    reason: RejectionReason | None = None
    dispatched: str | None = None
    started: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Claim:
        reason = data.get("reason")
        return cls(
            consumer=Consumer.from_dict(data["consumer"]),
            epsilon=float(data["epsilon"]),
            delta=float(data["delta"]),
            state=ClaimState(data["state"]),
            updated=str(data["updated"]),
            reason=RejectionReason(reason) if reason is not None else None,
            dispatched=data.get("dispatched"),
            started=data.get("started"),
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "consumer": self.consumer.to_dict(),
            "epsilon": self.epsilon,
            "delta": self.delta,
            "state": self.state.value,
            "updated": self.updated,
        }
        if self.reason is not None:
            data["reason"] = self.reason.value
        if self.dispatched is not None:
            data["dispatched"] = self.dispatched
        if self.started is not None:
            data["started"] = self.started
        return data


@dataclass(frozen=True)
class BudgetSpec:
    """``PrivacyBudget.spec``: total epsilon, per-claim delta, policy, and DPF's unlock steps."""

    epsilon: float
    delta: float
    policy: Policy = DEFAULT_POLICY
    unlock_steps: int = DEFAULT_UNLOCK_STEPS

    def __post_init__(self) -> None:
        require_positive("spec.epsilon", self.epsilon)
        require_delta("spec.delta", self.delta)
        validate_policy(self.policy)
        require_int("spec.dpf.unlockSteps", self.unlock_steps, minimum=1)

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> BudgetSpec:
        dpf = spec.get("dpf") or {}
        return cls(
            epsilon=float(spec["epsilon"]),
            delta=float(spec["delta"]),
            policy=spec.get("policy", DEFAULT_POLICY),
            unlock_steps=int(dpf.get("unlockSteps", DEFAULT_UNLOCK_STEPS)),
        )


@dataclass(frozen=True)
class Ledger:
    """The claims, in arrival order, and the epsilon DPF has unlocked so far."""

    claims: tuple[Claim, ...] = ()
    epsilon_unlocked: float = 0.0

    @classmethod
    def from_status(cls, status: Mapping[str, Any] | None) -> Ledger:
        """Read ``status.claims`` and ``status.epsilonUnlocked``; a missing status is an empty ledger."""
        status = status or {}
        return cls(
            claims=tuple(Claim.from_dict(entry) for entry in status.get("claims") or ()),
            epsilon_unlocked=float(status.get("epsilonUnlocked", 0.0)),
        )

    def claim(self, key: str) -> Claim | None:
        """The claim with ``key`` (:attr:`Consumer.key`), if there is one."""
        return next((claim for claim in self.claims if claim.consumer.key == key), None)

    def claims_of(self, uid: str) -> tuple[Claim, ...]:
        """Every claim of the object with ``uid``, whatever its version, in arrival order."""
        return tuple(claim for claim in self.claims if claim.consumer.uid == uid)


@dataclass(frozen=True)
class Totals:
    """Epsilon committed and reserved, and what is left: ``available = epsilon - committed - reserved``."""

    committed: float
    reserved: float
    available: float

    @property
    def exhausted(self) -> bool:
        """Nothing left to grant (the ``Exhausted`` condition)."""
        return self.available <= 0


@functools.lru_cache(maxsize=4096)
def exact(value: float) -> Fraction:
    """``value`` as the exact decimal it prints as."""
    return Fraction(repr(float(value)))


def allocated(claims: Iterable[Claim], state: ClaimState) -> Fraction:
    """Exact sum of the epsilon of the claims in ``state``."""
    return sum((exact(claim.epsilon) for claim in claims if claim.state is state), Fraction(0))


def totals(ledger: Ledger, spec: BudgetSpec) -> Totals:
    """Committed, reserved and available epsilon of ``ledger`` under ``spec``."""
    committed = allocated(ledger.claims, ClaimState.COMMITTED)
    reserved = allocated(ledger.claims, ClaimState.RESERVED)
    return Totals(float(committed), float(reserved), float(exact(spec.epsilon) - committed - reserved))


def status_fields(ledger: Ledger, spec: BudgetSpec) -> dict[str, Any]:
    """The ``PrivacyBudget.status`` fields this package owns, ready to be written as a patch."""
    sums = totals(ledger, spec)
    return {
        "epsilonCommitted": sums.committed,
        "epsilonReserved": sums.reserved,
        "epsilonAvailable": sums.available,
        "epsilonUnlocked": ledger.epsilon_unlocked,
        "claims": [claim.to_dict() for claim in ledger.claims],
    }
