"""A SecureModel's budget stage as its status shows it, decided from its claim alone (pure).

The stage: size the data, calibrate the noise, claim the target ε from the budget, and
wait until the claim is granted (condition ``BudgetReserved`` True, reason ``Reserved``)
or can never be (``Failed``). Training may start only once ``BudgetReserved`` is True:
no pod reads the data before the ε it may spend is held for it.

The phase stays ``WaitingForBudget`` through the whole stage, also once the claim is
granted: the next phase, ``Training``, begins when the training stage starts its pod.

A model claims once per training version of its spec (:class:`.children.Versions`): a
change of its model, data, training or privacy sends it back to this stage, to claim for
the new version, while the version it serves goes on serving (:func:`while_serving`).
"""

from collections.abc import Mapping
from typing import Any, Final

from securemodel.api.privacy_budget import ClaimState, RejectionReason
from securemodel.api.secure_model import Phase
from securemodel.operator.calibration import Plan
from securemodel.operator.status import READY, Condition, Outcome
from securemodel.privacy import Claim, Ledger

BUDGET_RESERVED: Final = "BudgetReserved"
CALIBRATION_FAILED: Final = "CalibrationFailed"
BUDGET_NOT_FOUND: Final = "BudgetNotFound"
WAITING: Final = "WaitingForBudget"
CLAIM_PENDING: Final = "Claiming"
# Reasons of the BudgetReserved condition once the model's claim is over: spent, given back,
# or rejected. Until then the model may hold a live claim, and deleting it must release it.
CLAIM_OVER: Final = frozenset(
    {
        ClaimState.COMMITTED,
        ClaimState.RELEASED,
        RejectionReason.DELTA_ABOVE_BUDGET,
        RejectionReason.EPSILON_ABOVE_BUDGET,
    }
)


# The claim ends without being spent: the model needs a new version of its spec to claim again.
REFUSED: Final = CLAIM_OVER - {ClaimState.COMMITTED}


def budget_condition(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The model's ``BudgetReserved`` condition, if it has one."""
    return next((c for c in status.get("conditions") or () if c.get("type") == BUDGET_RESERVED), None)


def may_hold_claim(status: Mapping[str, Any]) -> bool:
    """Whether the model may hold a Waiting or Reserved claim (or be about to make one)."""
    condition = budget_condition(status)
    return condition is None or condition.get("reason") not in CLAIM_OVER


def in_budget_stage(status: Mapping[str, Any], version: str) -> bool:
    """Whether the budget stage has work for the spec's ``version``: its claim is neither granted
    nor over, or the claim of the version the status describes was refused or given back and the
    spec has moved on to another version (which claims anew)."""
    condition = budget_condition(status)
    if condition is None:
        return True
    if condition.get("reason") in REFUSED:
        return status.get("version") != version
    return may_hold_claim(status) and condition.get("status") != "True"


def calibration_failed(budget: str, message: str) -> Outcome:
    """The noise cannot be calibrated (or the data sized): nothing is claimed until the spec changes."""
    text = f"no ε claimed from PrivacyBudget {budget}: {message}"
    return _unreserved(Phase.FAILED, CALIBRATION_FAILED, text, warning=True)


def budget_missing(budget: str) -> Outcome:
    """The budget does not exist (yet): the claim is made when it appears."""
    text = f"PrivacyBudget {budget} does not exist in this namespace; the claim is made once it does"
    return _unreserved(Phase.WAITING_FOR_BUDGET, BUDGET_NOT_FOUND, text, warning=True)


def claim_pending(budget: str, training: str) -> Outcome:
    """Training version ``training`` is about to claim: the model may hold a claim from now on."""
    text = f"training version {training} claims its ε from PrivacyBudget {budget}"
    return _unreserved(Phase.WAITING_FOR_BUDGET, CLAIM_PENDING, text)


def claimed(budget: str, claim: Claim, plan: Plan, noise_multiplier: float) -> Outcome:
    """The status for ``claim``, calibrated as ``plan`` at ``noise_multiplier``.

    A Committed claim (the model came back to a version it trained before) hands the model
    to the training stage, which finds that version's Jobs and reports what was spent.
    """
    privacy = {
        "privacy": {
            "epsilonClaimed": claim.epsilon,
            "delta": claim.delta,
            "noiseMultiplier": noise_multiplier,
            "sampleRate": plan.sample_rate,
            "steps": plan.steps,
            "accountant": plan.accountant,
        }
    }
    asked = f"ε={claim.epsilon:g}, δ={claim.delta:g}"
    match claim.state:
        case ClaimState.WAITING:
            text = f"waiting for PrivacyBudget {budget} to grant the claim of {asked}"
            return Outcome(
                phase=Phase.WAITING_FOR_BUDGET,
                ready=Condition(READY, False, WAITING, text),
                conditions=(Condition(BUDGET_RESERVED, False, ClaimState.WAITING, text),),
                fields=privacy,
            )
        case ClaimState.RESERVED:
            text = f"{asked} reserved from PrivacyBudget {budget}"
            run = f"σ={noise_multiplier:.4g}, q={plan.sample_rate:.4g}, {plan.steps} steps"
            return Outcome(
                phase=Phase.WAITING_FOR_BUDGET,
                ready=Condition(READY, False, BUDGET_RESERVED, f"{text} for {run}; training has not started"),
                conditions=(Condition(BUDGET_RESERVED, True, ClaimState.RESERVED, text),),
                fields=privacy,
            )
        case ClaimState.REJECTED:
            if claim.reason is RejectionReason.DELTA_ABOVE_BUDGET:
                why = f"δ={claim.delta:g} is above the δ it allows per claim"
            else:
                why = f"ε={claim.epsilon:g} is more than its whole ε"
            text = f"PrivacyBudget {budget} rejected the claim of {asked}: {why}"
            reason = claim.reason or ClaimState.REJECTED
            return _over(reason, text, privacy)
        case ClaimState.RELEASED:
            text = (
                f"the claim of {asked} on PrivacyBudget {budget} for this version of the spec was given back, "
                "and a released claim is not renewed: change the spec to claim for a new version"
            )
            return _over(ClaimState.RELEASED, text, privacy)
        case ClaimState.COMMITTED:
            text = f"ε={claim.epsilon:g} already spent on this version: it was trained before"
            return Outcome(
                phase=Phase.WAITING_FOR_BUDGET,
                ready=Condition(READY, False, ClaimState.COMMITTED, text),
                conditions=(Condition(BUDGET_RESERVED, True, ClaimState.COMMITTED, text),),
            )


def _over(reason: str, text: str, fields: Mapping[str, Any]) -> Outcome:
    return _unreserved(Phase.FAILED, reason, text, fields=fields, warning=True)


def _unreserved(
    phase: Phase, reason: str, text: str, *, fields: Mapping[str, Any] | None = None, warning: bool = False
) -> Outcome:
    """No claim is held for the model: Ready and BudgetReserved are False for ``reason``."""
    return Outcome(
        phase=phase,
        ready=Condition(READY, False, reason, text),
        conditions=(Condition(BUDGET_RESERVED, False, reason, text),),
        fields=dict(fields or {}),
        warning=warning,
    )


def stale_claims(ledger: Ledger, uid: str, training: str) -> tuple[Claim, ...]:
    """The live (Waiting or Reserved) claims of the model ``uid`` for versions other than ``training``.

    The spec moved on from them: each is released, or, if a train Job of its version exists
    (its pod may have read the data), committed whole.
    """
    live = (ClaimState.WAITING, ClaimState.RESERVED)
    return tuple(c for c in ledger.claims_of(uid) if c.consumer.version != training and c.state in live)


def while_serving(outcome: Outcome, serving: str | None, available: bool) -> Outcome:
    """``outcome`` of a version not serving yet, with Ready True while version ``serving`` still answers."""
    if not serving or not available or outcome.ready.status:
        return outcome
    ready = Condition(READY, True, "Serving", f"version {serving} serves; the spec's version: {outcome.ready.message}")
    return Outcome(outcome.phase, ready, outcome.conditions, outcome.fields, outcome.warning)
