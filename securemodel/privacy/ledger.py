"""The ledger rules of a privacy budget, as pure functions: ledger in, ledger and decisions out.

Every transition takes the current :class:`~securemodel.privacy.claims.Ledger`
and :class:`~securemodel.privacy.claims.BudgetSpec` and returns an
:class:`Outcome`: the new ledger and one :class:`Decision` per thing that
happened, for the Kubernetes side to write back (with a resourceVersion
precondition) and to report as one Event each.

Rules:

* Claims are keyed by consumer (:attr:`Consumer.key`: uid, and version where the
  consumer claims per version). Submitting a claim for a key that already
  has one (or had one, now compacted) returns the ledger unchanged and no
  decision (a restarted operator cannot count a claim twice); the first
  submission fixes the claim's epsilon and mechanism.
* A claim whose delta exceeds the budget's delta, or whose mechanism alone
  composes to more than the budget's whole epsilon at the budget's delta, is
  Rejected (final). A Waiting claim that the spec no longer admits is Rejected too.
* Other claims start Waiting and are granted (Reserved) all-or-nothing by the
  budget's policy (:mod:`securemodel.privacy.scheduling`) as soon as the
  composition (:mod:`securemodel.privacy.composition`) of every Committed and
  Reserved mechanism with theirs stays within the policy's ceiling at the
  budget's delta: on arrival, and after every transition that frees budget (a
  release, a commit below the reservation, a raised ``spec.epsilon`` via
  :func:`reconcile`). Each accepted arrival unlocks DPF budget. Submissions decided together
  (:func:`submit_all`) end as they would one after another.
* Reserved -> Committed when the consumer's pod has run; what was actually
  spent may be less than reserved (a DP-SGD run stopped early), never more.
  Committed is final: privacy spent is spent.
* Reserved -> dispatched (:func:`dispatch`) before any pod of the consumer may exist, and
  started (:func:`mark_started`) once the kubelet showed one of its containers run.
* Reserved or Waiting -> Released only if no container of the consumer ever ran
  (no ``started`` mark; :func:`release`).
* Invariant after every transition: the composed epsilon of the Committed and
  Reserved mechanisms at ``spec.delta`` is <= ``spec.epsilon``, provided the
  spec only changes as :func:`can_set_epsilon` allows.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from securemodel.privacy._checks import is_number, require_delta, require_positive
from securemodel.privacy.claims import (
    BudgetSpec,
    Claim,
    ClaimState,
    Consumer,
    Ledger,
    RejectionReason,
    exact,
    held,
)
from securemodel.privacy.composition import Multiset, composed_epsilon, merged, standalone_epsilon
from securemodel.privacy.mechanisms import DpSgd, EpsilonDelta, Mechanism, spends_at_most
from securemodel.privacy.scheduling import Demand, ceiling, order, unlock_on_arrival


class LedgerError(ValueError):
    """A transition the rules forbid, e.g. committing a claim that was never granted."""


class DecisionKind(enum.StrEnum):
    """What happened to a claim."""

    QUEUED = "Queued"
    GRANTED = "Granted"
    REJECTED = "Rejected"
    COMMITTED = "Committed"
    RELEASED = "Released"


@dataclass(frozen=True)
class Decision:
    """One thing that happened to one claim, worth one Event on the budget."""

    kind: DecisionKind
    consumer: Consumer
    epsilon: float
    message: str

    @property
    def event_reason(self) -> str:
        """The Event's reason, e.g. ``ClaimGranted``."""
        return f"Claim{self.kind.value}"

    @property
    def event_type(self) -> str:
        """The Event's type: ``Warning`` for a rejection, else ``Normal``."""
        return "Warning" if self.kind is DecisionKind.REJECTED else "Normal"


@dataclass(frozen=True)
class Outcome:
    """The ledger after a transition and what the transition decided, in order."""

    ledger: Ledger
    decisions: tuple[Decision, ...] = ()


@dataclass(frozen=True)
class Submission:
    """``consumer``'s claim of (``epsilon``, ``delta``) running ``mechanism`` (None: the generic
    ``EpsilonDelta(epsilon, delta)``), as :func:`submit_all` takes it.

    Raises:
        ValueError: if ``epsilon`` is not positive or ``delta`` not in (0, 1).
    """

    consumer: Consumer
    epsilon: float
    delta: float
    mechanism: Mechanism | None = None

    def __post_init__(self) -> None:
        require_positive("epsilon", self.epsilon)
        require_delta("delta", self.delta)


def submit(
    ledger: Ledger,
    spec: BudgetSpec,
    consumer: Consumer,
    epsilon: float,
    delta: float,
    now: str,
    *,
    mechanism: Mechanism | None = None,
) -> Outcome:
    """Add ``consumer``'s claim of (``epsilon``, ``delta``) running ``mechanism``, then grant what fits.

    ``mechanism`` is what the budget composes (for DP-SGD: ``DpSgd(sigma, q, steps)``);
    without one the claim is the generic ``EpsilonDelta(epsilon, delta)``.
    Idempotent per ``consumer.key``. Returns a Rejected, Granted or Queued
    decision for the new claim (and Granted decisions for any other claim the
    pass grants).
    """
    (outcome,) = submit_all(ledger, spec, (Submission(consumer, epsilon, delta, mechanism),), now)
    return outcome


def submit_all(ledger: Ledger, spec: BudgetSpec, submissions: Sequence[Submission], now: str) -> tuple[Outcome, ...]:
    """Submit ``submissions`` in order, deciding them together; one :class:`Outcome` per submission.

    Guarantee: the ledger is the one :func:`submit` called once per submission, in order, leaves
    (the same claims Rejected, Reserved and Waiting, the same ``epsilonUnlocked``), granted at a
    cost of O(log k) compositions for k submissions of one mechanism instead of O(k) (given that
    composition grows with every mechanism added, :func:`_fitting`). Why it is the same: after a
    pass of the policy no waiting claim fits what the budget holds, so while the policy's ceiling
    stays where it was, the pass an arrival runs can grant only that arrival, if it fits; those
    arrivals are decided together in arrival order when the ceiling next moves (DPF's unlocking,
    which runs the full pass at that arrival, as :func:`submit` does) or after the last submission.

    Every Outcome holds the ledger after all the submissions. Its decisions are those about its
    own claim (Rejected; Granted; or Queued if it still waits after all of them: a claim granted
    later in the batch is not also Queued) and the Granted or Rejected decisions of claims that
    waited before and that its arrival's pass decided. A Queued message states the composition as
    the batch left the budget.
    """
    decisions: list[list[Decision]] = [[] for _ in submissions]
    arrived: dict[str, int] = {}  # key of a claim a submission added Waiting -> the submission's position
    claims = list(ledger.claims)
    pending: list[int] = []  # positions in ``claims`` of arrivals not yet decided, at the ceiling ``settled_at``
    settled_at: float | None = None  # the ceiling of the last full pass, if one ran
    unlocked = ledger.epsilon_unlocked
    for position, submission in enumerate(submissions):
        key = submission.consumer.key
        if key in arrived or _known(ledger, claims, key):
            continue
        claim = Claim(submission.consumer, float(submission.epsilon), float(submission.delta), ClaimState.WAITING, now,
                      mechanism=submission.mechanism)  # type: ignore[arg-type]  # fmt: skip
        reason = _rejection(claim, spec)
        if reason is not None:
            claims.append(replace(claim, state=ClaimState.REJECTED, reason=reason))
            decisions[position].append(_rejected_decision(claims[-1], spec))
            continue
        unlocked = float(unlock_on_arrival(exact(unlocked), exact(spec.epsilon), spec.unlock_steps))
        limit = ceiling(spec.policy, spec.epsilon, unlocked)
        arrived[key] = position
        if limit == settled_at:
            claims.append(claim)
            pending.append(len(claims) - 1)
            continue
        if settled_at is not None:
            _decide_arrivals(claims, pending, ledger, settled_at, spec, now, decisions, arrived)
        claims.append(claim)
        pending = []
        outcome = _schedule(replace(ledger, claims=tuple(claims), epsilon_unlocked=unlocked), spec, now)
        claims = list(outcome.ledger.claims)
        for decision in outcome.decisions:
            decisions[arrived.get(decision.consumer.key, position)].append(decision)
        settled_at = limit
    if settled_at is not None:
        _decide_arrivals(claims, pending, ledger, settled_at, spec, now, decisions, arrived)
    after = replace(ledger, claims=tuple(claims), epsilon_unlocked=unlocked)
    with_one: dict[Mechanism, float] = {}  # the composition with one more of a mechanism, for the Queued messages
    for claim in claims:
        if claim.state is ClaimState.WAITING and claim.consumer.key in arrived:
            if claim.mechanism not in with_one:
                with_one[claim.mechanism] = composed_epsilon(merged(held(after), ((claim.mechanism, 1),)), spec.delta)
            decisions[arrived[claim.consumer.key]].append(_queued_decision(claim, with_one[claim.mechanism], after, spec))
    return tuple(Outcome(after, tuple(own)) for own in decisions)


def commit(
    ledger: Ledger,
    spec: BudgetSpec,
    key: str,
    now: str,
    epsilon_spent: float | None = None,
    *,
    mechanism: Mechanism | None = None,
) -> Outcome:
    """Mark the Reserved claim with ``key`` Committed: a pod has touched the data.

    ``epsilon_spent`` (default: all of the reservation) is what the accountant
    says the run spent, between 0 and the reserved epsilon; ``mechanism`` is
    what it ran (for DP-SGD: the reserved ``DpSgd`` with the steps actually
    run), which must release no more than the reserved one
    (:func:`~securemodel.privacy.mechanisms.spends_at_most`). The difference
    goes back to the budget. Without ``mechanism``, a generic claim is charged
    ``EpsilonDelta(epsilon_spent, delta)``, and any other keeps its whole
    reserved mechanism (never under-charge: an epsilon alone does not say
    which steps ran). Committing a Committed claim again changes nothing.

    Raises:
        LedgerError: if there is no claim with ``key``, it is not Reserved or
            Committed, or what was spent is out of range.
    """
    claim = _existing(ledger, key)
    if claim.state is ClaimState.COMMITTED:
        return Outcome(ledger)
    if claim.state is not ClaimState.RESERVED:
        raise LedgerError(
            f"only a Reserved claim can be committed; the claim of {claim.consumer} is {claim.state.value}"
        )
    spent = claim.epsilon if epsilon_spent is None else epsilon_spent
    if not is_number(spent) or not 0 <= spent <= claim.epsilon:
        raise LedgerError(
            f"{claim.consumer} cannot commit epsilon {spent}: it must be between 0 and the {claim.epsilon} reserved"
        )
    if mechanism is None:
        mechanism = claim.mechanism
        if claim.mechanism == EpsilonDelta(claim.epsilon, claim.delta):
            mechanism = EpsilonDelta(float(spent), claim.delta)
    elif not spends_at_most(mechanism, claim.mechanism):
        raise LedgerError(
            f"{claim.consumer} cannot commit {mechanism}: it releases more than the reserved {claim.mechanism}"
        )
    committed = replace(claim, state=ClaimState.COMMITTED, epsilon=float(spent), updated=now, mechanism=mechanism)
    ran = (
        f" ({mechanism.steps} of {claim.mechanism.steps} steps)"
        if isinstance(mechanism, DpSgd) and isinstance(claim.mechanism, DpSgd)
        else ""
    )
    decision = Decision(
        DecisionKind.COMMITTED,
        claim.consumer,
        committed.epsilon,
        f"{claim.consumer} spent epsilon {committed.epsilon} of the {claim.epsilon} reserved{ran}",
    )
    return _then_schedule(_replaced(ledger, committed), spec, now, decision)


def dispatch(ledger: Ledger, key: str, now: str) -> Outcome:
    """Record that the Reserved claim with ``key`` may now have a workload that reads the data.

    The operator writes this *before* it creates the train Job, so a claim without the mark
    provably never had a pod. Idempotent: the first time is kept.

    Raises:
        LedgerError: if there is no claim with ``key`` or it is not Reserved.
    """
    claim = _existing(ledger, key)
    if claim.state is not ClaimState.RESERVED:
        raise LedgerError(
            f"only a Reserved claim can be dispatched; the claim of {claim.consumer} is {claim.state.value}"
        )
    if claim.dispatched is not None:
        return Outcome(ledger)
    return Outcome(_replaced(ledger, replace(claim, dispatched=now)))


def mark_started(ledger: Ledger, key: str, now: str) -> Outcome:
    """Record that a container of the claim's workload ran (as the kubelet reported it).

    From then on the claim can only end Committed. Idempotent; a settled claim is left as it is.

    Raises:
        LedgerError: if there is no claim with ``key``, or it was never dispatched.
    """
    claim = _existing(ledger, key)
    if claim.started is not None or claim.state is not ClaimState.RESERVED:
        return Outcome(ledger)
    if claim.dispatched is None:
        raise LedgerError(f"the claim of {claim.consumer} was never dispatched: no pod of it can have run")
    return Outcome(_replaced(ledger, replace(claim, started=now)))


def release(ledger: Ledger, spec: BudgetSpec, key: str, now: str) -> Outcome:
    """Give back the Waiting or Reserved claim with ``key``, whose consumer no longer needs it.

    Allowed only while no container of the consumer's workload is known to have run
    (:attr:`Claim.started` unset): once one has, it may have read the data and the claim
    can only be committed. The caller (the operator) releases a dispatched claim only
    once it has seen the workload and all its pods gone; this rule makes that safe even
    if its view was stale. Releasing an unknown, Released or Rejected claim changes nothing.

    Raises:
        LedgerError: if the claim is Committed or started.
    """
    claim = ledger.claim(key)
    if claim is None or claim.state in (ClaimState.RELEASED, ClaimState.REJECTED):
        return Outcome(ledger)
    if claim.state is ClaimState.COMMITTED:
        raise LedgerError(f"the claim of {claim.consumer} is Committed: privacy spent cannot be released")
    if claim.started is not None:
        raise LedgerError(
            f"a container of {claim.consumer} ran at {claim.started}, so its {claim.state.value} claim cannot be "
            "released; commit what it spent instead"
        )
    released = replace(claim, state=ClaimState.RELEASED, updated=now)
    decision = Decision(
        DecisionKind.RELEASED,
        claim.consumer,
        claim.epsilon,
        f"{claim.consumer} gave back its {claim.state.value} claim of epsilon {claim.epsilon}",
    )
    return _then_schedule(_replaced(ledger, released), spec, now, decision)


def reconcile(ledger: Ledger, spec: BudgetSpec, now: str) -> Outcome:
    """Apply ``spec`` to the waiting claims: reject those it no longer admits, grant those that fit.

    Call it whenever the spec changes (e.g. ``spec.epsilon`` raised) and on
    every resync; with nothing to do it returns the ledger unchanged.
    """
    return _schedule(ledger, spec, now)


def epsilon_floor(ledger: Ledger, delta: float) -> float:
    """The lowest ``spec.epsilon`` the ledger allows at budget delta ``delta``: Committed and Reserved composed."""
    require_delta("delta", delta)
    return composed_epsilon(held(ledger), delta)


def can_set_epsilon(ledger: Ledger, epsilon: float, delta: float) -> bool:
    """Whether the budget may become (``epsilon``, ``delta``): the Committed and Reserved claims compose within it.

    Lowering epsilon below what is committed would pretend spent privacy
    unspent, and below committed + reserved would break the invariant while
    the reserved claims run (they may all end Committed). Lowering delta
    raises the composed epsilon, so it is checked the same way.
    """
    require_positive("epsilon", epsilon)
    return epsilon_floor(ledger, delta) <= epsilon


def _schedule(ledger: Ledger, spec: BudgetSpec, now: str) -> Outcome:
    """Reject waiting claims the spec no longer admits, then grant what the policy selects.

    A budget that shares data with another (``spec.overlaps``) grants nothing: each datum has one
    ledger, so a second budget can never buy fresh ε for data the first has charged for.
    Waiting claims are granted in the policy's order, each if it fits (:func:`_grant`).
    """
    decisions: list[Decision] = []
    claims = list(ledger.claims)
    for index, claim in enumerate(claims):
        reason = _rejection(claim, spec) if claim.state is ClaimState.WAITING else None
        if reason is not None:
            claims[index] = replace(claim, state=ClaimState.REJECTED, reason=reason, updated=now)
            decisions.append(_rejected_decision(claims[index], spec))
    waiting = {c.consumer.key: i for i, c in enumerate(claims) if c.state is ClaimState.WAITING}
    ledger = replace(ledger, claims=tuple(claims))
    if not waiting or spec.overlaps:  # data two budgets cover is granted by neither (one ledger per datum)
        return Outcome(ledger, tuple(decisions))
    demands = [
        Demand(key, standalone_epsilon(claims[i].mechanism, spec.delta) / spec.epsilon) for key, i in waiting.items()
    ]
    in_order = [waiting[demand.key] for demand in order(spec.policy, demands)]
    decisions += _grant(claims, in_order, held(ledger), _ceiling(ledger, spec), set(), spec, now)
    return Outcome(replace(ledger, claims=tuple(claims)), tuple(decisions))


def _decide_arrivals(
    claims: list[Claim],
    pending: list[int],
    ledger: Ledger,
    limit: float,
    spec: BudgetSpec,
    now: str,
    decisions: list[list[Decision]],
    arrived: Mapping[str, int],
) -> None:
    """Grant the ``pending`` arrivals (positions in ``claims``, in arrival order) that fit under ``limit``, in place.

    Each arrived after a full pass at ``limit``, which left no waiting claim that fits: as the pass
    of its own arrival would, grant it if it fits, never a claim that waited before it. A mechanism
    a waiting claim has is too big already (its claim failed on less than the budget holds now).
    """
    if not pending or spec.overlaps:
        return
    others = set(pending)
    too_big = {c.mechanism for i, c in enumerate(claims) if c.state is ClaimState.WAITING and i not in others}
    base = held(replace(ledger, claims=tuple(claims)))
    for decision in _grant(claims, pending, base, limit, too_big, spec, now):
        decisions[arrived[decision.consumer.key]].append(decision)


def _grant(
    claims: list[Claim],
    in_order: Sequence[int],
    base: Multiset,
    limit: float,
    too_big: set[Mechanism],
    spec: BudgetSpec,
    now: str,
) -> list[Decision]:
    """Reserve, in place, the Waiting ``claims`` at positions ``in_order`` that fit, in that order; their decisions.

    The rule, one claim at a time: a claim is granted if the composition of ``base`` (what the budget
    holds) with what this pass granted before it and its own mechanism is within ``limit``; a mechanism
    that did not fit (or is in ``too_big``) is not tried again: the budget only grows within a pass,
    and composition never shrinks as it grows. A run of consecutive claims of one mechanism is
    therefore decided at once: its longest prefix that fits (:func:`_fitting`), granted in order. Each
    claim of a run granted together gets a Granted decision whose message states the composed epsilon
    after the whole run.
    """
    decisions: list[Decision] = []
    for mechanism, group in itertools.groupby(in_order, key=lambda index: claims[index].mechanism):
        if mechanism in too_big:
            continue
        run = list(group)
        count, composed = _fitting(base, mechanism, len(run), limit, spec.delta)
        if count < len(run):
            too_big.add(mechanism)
        if count == 0:
            continue
        base = merged(base, ((mechanism, count),))
        for index in run[:count]:
            claims[index] = replace(claims[index], state=ClaimState.RESERVED, updated=now)
            decisions.append(_granted_decision(claims[index], composed, count, spec))
    return decisions


def _fitting(base: Multiset, mechanism: Mechanism, most: int, limit: float, delta: float) -> tuple[int, float]:
    """The largest ``k <= most`` with ``base`` and ``k`` runs of ``mechanism`` composed within ``limit``, and
    that composition (0.0 if ``k`` is 0).

    Composition only grows with ``k``, so this is the count the one-by-one rule grants. Cost: one
    composition if all ``most`` fit, else galloping (1, 2, 4, ...) then bisection, O(log ``most``).
    The figures' last digits depend on the path the composition cache took (:mod:`~securemodel.privacy.composition`;
    measured: 2e-7 of 57.46 for 1000 DP-SGD claims composed at once or one at a time), so a ceiling within that
    of a figure may count one claim differently, as two one-by-one passes with different cache histories may.
    """

    def composed(count: int) -> float:
        return composed_epsilon(merged(base, ((mechanism, count),)), delta)

    whole = composed(most)
    if whole <= limit:
        return most, whole
    fits, fitted, fails = 0, 0.0, most
    probe = 1
    while probe < fails:
        epsilon = composed(probe)
        if epsilon > limit:
            fails = probe
            break
        fits, fitted = probe, epsilon
        probe *= 2
    while fails - fits > 1:
        middle = (fits + fails) // 2
        epsilon = composed(middle)
        if epsilon > limit:
            fails = middle
        else:
            fits, fitted = middle, epsilon
    return fits, fitted


def _ceiling(ledger: Ledger, spec: BudgetSpec) -> float:
    return ceiling(spec.policy, spec.epsilon, ledger.epsilon_unlocked)


def _then_schedule(ledger: Ledger, spec: BudgetSpec, now: str, decision: Decision) -> Outcome:
    outcome = _schedule(ledger, spec, now)
    return Outcome(outcome.ledger, (decision, *outcome.decisions))


def _rejection(claim: Claim, spec: BudgetSpec) -> RejectionReason | None:
    # Comparing two floats agrees with comparing the decimals they print as.
    if claim.delta > spec.delta:
        return RejectionReason.DELTA_ABOVE_BUDGET
    if standalone_epsilon(claim.mechanism, spec.delta) > spec.epsilon:
        return RejectionReason.EPSILON_ABOVE_BUDGET
    return None


def _rejected_decision(claim: Claim, spec: BudgetSpec) -> Decision:
    if claim.reason is RejectionReason.DELTA_ABOVE_BUDGET:
        why = f"its delta {claim.delta} is above the budget's delta {spec.delta}"
    else:
        alone = standalone_epsilon(claim.mechanism, spec.delta)
        why = (
            f"alone it releases epsilon {alone:.6g} at the budget's delta {spec.delta:g}, "
            f"above the budget's whole epsilon {spec.epsilon}"
        )
    message = f"rejected the claim of {claim.consumer}: {why}"
    return Decision(DecisionKind.REJECTED, claim.consumer, claim.epsilon, message)


def _granted_decision(claim: Claim, composed: float, together: int, spec: BudgetSpec) -> Decision:
    after = f" (after granting {together} claims together)" if together > 1 else ""
    return Decision(
        DecisionKind.GRANTED,
        claim.consumer,
        claim.epsilon,
        f"granted epsilon {claim.epsilon} to {claim.consumer}; the budget now holds epsilon {composed:.6g} "
        f"of {spec.epsilon} composed at delta {spec.delta:g}{after}",
    )


def _queued_decision(claim: Claim, with_it: float, ledger: Ledger, spec: BudgetSpec) -> Decision:
    return Decision(
        DecisionKind.QUEUED,
        claim.consumer,
        claim.epsilon,
        f"{claim.consumer} waits for epsilon {claim.epsilon}: with it the budget would hold epsilon {with_it:.6g} "
        f"composed at delta {spec.delta:g}, above the {_ceiling(ledger, spec):.6g} grantable under {spec.policy}",
    )


def _known(ledger: Ledger, claims: Sequence[Claim], key: str) -> bool:
    """Whether ``key`` has (or had, now compacted) a claim: ``claims`` are ``ledger``'s and those added since."""
    return ledger.compacted_key(key) or any(claim.consumer.key == key for claim in claims)


def _existing(ledger: Ledger, key: str) -> Claim:
    claim = ledger.claim(key)
    if claim is None:
        raise LedgerError(f"no claim with key {key}")
    return claim


def _replaced(ledger: Ledger, claim: Claim) -> Ledger:
    key = claim.consumer.key
    return replace(ledger, claims=tuple(claim if c.consumer.key == key else c for c in ledger.claims))
