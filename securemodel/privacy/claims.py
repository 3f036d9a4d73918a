"""The privacy-budget ledger as plain data, mirroring ``PrivacyBudget`` (DESIGN.md section 1).

``BudgetSpec`` mirrors ``spec``; ``Ledger`` mirrors the ledger part of
``status`` (``claims``, ``compacted`` and ``epsilonUnlocked``); ``Totals`` is
what it holds. :mod:`securemodel.privacy.status` writes the status back, with
the hash chain (:mod:`securemodel.privacy.chain`). Everything here is immutable;
the rules that change a ledger are in :mod:`securemodel.privacy.ledger`.

Each claim records the mechanism it runs (:mod:`securemodel.privacy.mechanisms`);
the budget's spend is the composition of the mechanisms of its Committed and
Reserved claims at the budget's lifetime delta
(:mod:`securemodel.privacy.composition`). The claims' own epsilons are also
summed, exactly (each float read as the decimal it prints as), to show what
plain summing would have charged.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from securemodel.api.privacy_budget import DEFAULT_UNLOCK_STEPS, ClaimState, RejectionReason
from securemodel.privacy._checks import require_delta, require_int, require_positive
from securemodel.privacy.composition import Multiset, composed_epsilon, merged, multiset
from securemodel.privacy.mechanisms import EpsilonDelta, Mechanism, mechanism_from_dict
from securemodel.privacy.scheduling import Policy, validate_policy

DEFAULT_POLICY: Policy = "fcfs"
EXHAUSTED_BELOW = 1e-3


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
    """One ledger entry: a consumer's claim of ``epsilon`` at ``delta``, running ``mechanism``.

    ``epsilon`` at ``delta`` is the consumer's own guarantee (for DP-SGD: the
    target its noise was calibrated for); the budget charges the composition of
    ``mechanism``. Without a mechanism the claim is the generic
    ``EpsilonDelta(epsilon, delta)``. For a Committed claim ``epsilon`` and
    ``mechanism`` are what was spent. ``updated`` is the RFC 3339 time of the
    last state change; ``reason`` is set on Rejected claims.

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
    mechanism: Mechanism = None  # type: ignore[assignment]  # None: EpsilonDelta(epsilon, delta)

    def __post_init__(self) -> None:
        if self.mechanism is None:
            object.__setattr__(self, "mechanism", EpsilonDelta(self.epsilon, self.delta))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Claim:
        """Read an entry; one without ``mechanism`` (written before mechanisms existed) is generic."""
        reason = data.get("reason")
        mechanism = data.get("mechanism")
        return cls(
            consumer=Consumer.from_dict(data["consumer"]),
            epsilon=float(data["epsilon"]),
            delta=float(data["delta"]),
            state=ClaimState(data["state"]),
            updated=str(data["updated"]),
            reason=RejectionReason(reason) if reason is not None else None,
            dispatched=data.get("dispatched"),
            started=data.get("started"),
            mechanism=mechanism_from_dict(mechanism) if mechanism is not None else None,  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict[str, Any]:
        """The entry as written in ``status.claims`` (without its chain digests); a generic mechanism
        equal to the claim's own epsilon and delta is left out."""
        data: dict[str, Any] = {
            "consumer": self.consumer.to_dict(),
            "epsilon": self.epsilon,
            "delta": self.delta,
            "state": self.state.value,
            "updated": self.updated,
        }
        if self.mechanism != EpsilonDelta(self.epsilon, self.delta):
            data["mechanism"] = self.mechanism.to_dict()
        if self.reason is not None:
            data["reason"] = self.reason.value
        if self.dispatched is not None:
            data["dispatched"] = self.dispatched
        if self.started is not None:
            data["started"] = self.started
        return data


@dataclass(frozen=True)
class Compacted:
    """Settled entries folded into one record, so the ledger fits one API object.

    Only a prefix of the ledger whose entries are all final (Committed,
    Released, Rejected) is folded; what the budget needs of them stays exact:
    the mechanisms of the Committed ones, counted per identical mechanism (so
    composition is unchanged), their summed epsilon and delta, and every folded
    consumer key (so a folded consumer cannot claim twice). ``previous`` is the
    chain digest of the last folded entry, so the chain continues through the
    record (:mod:`securemodel.privacy.chain`).
    """

    entries: int
    keys: tuple[str, ...]
    mechanisms: Multiset
    epsilon_summed: float
    delta_summed: float
    previous: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Compacted:
        return cls(
            entries=int(data["entries"]),
            keys=tuple(str(key) for key in data.get("keys") or ()),
            mechanisms=multiset(
                {mechanism_from_dict(item["mechanism"]): int(item["count"]) for item in data.get("mechanisms") or ()}
            ),
            epsilon_summed=float(data["epsilonSummed"]),
            delta_summed=float(data["deltaSummed"]),
            previous=str(data["previous"]),
        )

    def to_dict(self) -> dict[str, Any]:
        """The record as written in ``status.compacted`` (without its own digest)."""
        return {
            "entries": self.entries,
            "keys": list(self.keys),
            "mechanisms": [{"mechanism": m.to_dict(), "count": c} for m, c in self.mechanisms],
            "epsilonSummed": self.epsilon_summed,
            "deltaSummed": self.delta_summed,
            "previous": self.previous,
        }


def folded(compacted: Compacted | None, claims: Iterable[Claim], previous: str) -> Compacted:
    """``compacted`` with ``claims`` (final ones, in ledger order) folded in, linked after ``previous``.

    Raises:
        ValueError: if a claim is still Waiting or Reserved.
    """
    claims = tuple(claims)
    live = [claim for claim in claims if claim.state in (ClaimState.WAITING, ClaimState.RESERVED)]
    if live:
        raise ValueError(f"only settled claims can be compacted; the claim of {live[0].consumer} is {live[0].state}")
    spent = [claim for claim in claims if claim.state is ClaimState.COMMITTED]
    before = compacted or Compacted(0, (), (), 0.0, 0.0, "")
    return Compacted(
        entries=before.entries + len(claims),
        keys=(*before.keys, *(claim.consumer.key for claim in claims)),
        mechanisms=merged(before.mechanisms, multiset(claim.mechanism for claim in spent)),
        epsilon_summed=float(exact(before.epsilon_summed) + sum((exact(c.epsilon) for c in spent), Fraction(0))),
        delta_summed=float(exact(before.delta_summed) + sum((exact(c.delta) for c in spent), Fraction(0))),
        previous=previous,
    )


@dataclass(frozen=True)
class BudgetSpec:
    """``PrivacyBudget.spec``: total epsilon and the lifetime delta every claim composes within,
    policy, and DPF's unlock steps; ``overlaps`` names the other budgets of the namespace that
    cover some of the same data (the operator fills it in; while it is not empty nothing is granted)."""

    epsilon: float
    delta: float
    policy: Policy = DEFAULT_POLICY
    unlock_steps: int = DEFAULT_UNLOCK_STEPS
    overlaps: tuple[str, ...] = ()

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
    """The claims, in arrival order, after the ``compacted`` record of older settled ones,
    and the epsilon DPF has unlocked so far."""

    claims: tuple[Claim, ...] = ()
    epsilon_unlocked: float = 0.0
    compacted: Compacted | None = None

    @classmethod
    def from_status(cls, status: Mapping[str, Any] | None) -> Ledger:
        """Read ``status.claims``, ``status.compacted`` and ``status.epsilonUnlocked``; a missing status is
        an empty ledger. The chain is not checked here: see :func:`securemodel.privacy.chain.verify`."""
        status = status or {}
        compacted = status.get("compacted")
        return cls(
            claims=tuple(Claim.from_dict(entry) for entry in status.get("claims") or ()),
            epsilon_unlocked=float(status.get("epsilonUnlocked", 0.0)),
            compacted=Compacted.from_dict(compacted) if compacted else None,
        )

    def claim(self, key: str) -> Claim | None:
        """The claim with ``key`` (:attr:`Consumer.key`), if there is one not compacted."""
        return next((claim for claim in self.claims if claim.consumer.key == key), None)

    def claims_of(self, uid: str) -> tuple[Claim, ...]:
        """Every claim of the object with ``uid`` not compacted, whatever its version, in arrival order."""
        return tuple(claim for claim in self.claims if claim.consumer.uid == uid)

    def compacted_key(self, key: str) -> bool:
        """Whether the claim with ``key`` was settled and folded into the compacted record."""
        return self.compacted is not None and key in self._compacted_keys

    @functools.cached_property
    def _compacted_keys(self) -> frozenset[str]:
        return frozenset(self.compacted.keys) if self.compacted is not None else frozenset()

    @property
    def holds_spend(self) -> bool:
        """Whether the ledger records privacy spent or held: a Reserved or Committed claim, or a compacted record
        that folded a Committed one (Released and Rejected claims fold in without their mechanisms)."""
        live = any(claim.state in (ClaimState.RESERVED, ClaimState.COMMITTED) for claim in self.claims)
        return live or (self.compacted is not None and bool(self.compacted.mechanisms))

    def mechanisms(self, *states: ClaimState) -> Multiset:
        """The mechanisms of the claims in ``states`` (the compacted ones count as Committed)."""
        held = multiset(claim.mechanism for claim in self.claims if claim.state in states)
        if ClaimState.COMMITTED in states and self.compacted is not None:
            return merged(self.compacted.mechanisms, held)
        return held


@dataclass(frozen=True)
class Totals:
    """What the ledger holds, composed at the budget's delta, and what summing would have charged.

    ``committed`` is the composed epsilon of the Committed claims; ``reserved`` is what the
    Reserved ones add to it (composed committed + reserved, minus ``committed``);
    ``available = epsilon - committed - reserved`` (the headroom). ``summed_epsilon`` and
    ``summed_delta`` are the plain sums of the Committed and Reserved claims' own epsilon and
    delta. ``math.inf`` where no finite epsilon holds at the budget's delta.
    """

    committed: float
    reserved: float
    available: float
    summed_epsilon: float
    summed_delta: float

    @property
    def exhausted(self) -> bool:
        """Nothing left to grant (the ``Exhausted`` condition): less than :data:`EXHAUSTED_BELOW` of ε, the
        residue that composing at a discretised privacy loss leaves of a budget spent to its end."""
        return self.available < EXHAUSTED_BELOW


@functools.lru_cache(maxsize=4096)
def exact(value: float) -> Fraction:
    """``value`` as the exact decimal it prints as."""
    return Fraction(repr(float(value)))


def allocated(claims: Iterable[Claim], state: ClaimState) -> Fraction:
    """Exact sum of the epsilon of the claims in ``state``."""
    return sum((exact(claim.epsilon) for claim in claims if claim.state is state), Fraction(0))


def held(ledger: Ledger) -> Multiset:
    """The mechanisms the budget is charged for: Committed (with the compacted ones) and Reserved."""
    return ledger.mechanisms(ClaimState.COMMITTED, ClaimState.RESERVED)


def totals(ledger: Ledger, spec: BudgetSpec) -> Totals:
    """Committed, reserved and available epsilon of ``ledger`` composed at ``spec.delta``, and the plain sums."""
    committed = composed_epsilon(ledger.mechanisms(ClaimState.COMMITTED), spec.delta, lasting=True)
    both = composed_epsilon(held(ledger), spec.delta)
    live = [claim for claim in ledger.claims if claim.state in (ClaimState.COMMITTED, ClaimState.RESERVED)]
    summed_epsilon = sum((exact(claim.epsilon) for claim in live), Fraction(0))
    summed_delta = sum((exact(claim.delta) for claim in live), Fraction(0))
    if ledger.compacted is not None:
        summed_epsilon += exact(ledger.compacted.epsilon_summed)
        summed_delta += exact(ledger.compacted.delta_summed)
    return Totals(
        committed=committed,
        reserved=both - committed if math.isfinite(both) else math.inf,
        available=spec.epsilon - both,
        summed_epsilon=float(summed_epsilon),
        summed_delta=float(summed_delta),
    )
