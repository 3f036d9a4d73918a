"""What a FederatedRound's status says at each point of its lifecycle (pure builders of :class:`Outcome`).

Phase Pending → Running → Succeeded | Failed. Conditions besides Ready, Reconciling and Stalled:
``Consented`` (every silo's budget exists, consents to the round's namespace and covers the silo's
data), ``BudgetReserved`` (every silo's claim is held or spent) and ``Aggregated`` (the aggregator's
run ended, and how). ``status.participants`` has one entry per silo: its state, its state in each
round, its claim, and the σ, q and steps the operator calibrated for it, from which any accountant
reproduces its ε.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from securemodel.api.federated_round import Phase
from securemodel.operator.conditions import READY, Condition, Outcome, Progress
from securemodel.operator.federated.snapshot import Snapshot
from securemodel.operator.federated.views import participant_state
from securemodel.privacy import Claim, ClaimState, DpSgd

CONSENTED: Final = "Consented"
BUDGET_RESERVED: Final = "BudgetReserved"
AGGREGATED: Final = "Aggregated"
BUDGET_NOT_FOUND: Final = "BudgetNotFound"
NOT_CONSENTED: Final = "BudgetNotConsented"
NOT_COVERED: Final = "DataNotCovered"
UNSUPPORTED_SOURCE: Final = "UnsupportedDataSource"
CALIBRATION_FAILED: Final = "CalibrationFailed"
EVALUATION_REFUSED: Final = "EvaluationSourceRefused"

Claims = Mapping[str, Claim | None]
Refusals = Mapping[str, tuple[str, str] | None]


def _participants(s: Snapshot, claims: Claims, refused: Refusals, result: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    history = (result or {}).get("history") or []
    entries = []
    for silo in s.silos:
        name = silo.spec.name
        entry: dict[str, Any] = {"name": name, "namespace": silo.spec.namespace, "budget": silo.spec.budget_ref,
                                 "state": participant_state(s, silo, result).value}  # fmt: skip
        rounds = []
        for item in history:
            if name in (item.get("submitted") or ()):
                rounds.append({"round": int(item["round"]), "state": "Submitted"})
            elif name in (item.get("dropped") or ()):
                rounds.append({"round": int(item["round"]), "state": "Dropped"})
        entry["rounds"] = rounds
        claim = claims.get(name)
        mechanism = claim.mechanism if claim is not None else None
        if isinstance(mechanism, DpSgd):
            sigma, rate, steps = mechanism.noise_multiplier, mechanism.sample_rate, mechanism.steps
        elif silo.calibration is not None and silo.plan is not None:
            sigma, rate, steps = silo.calibration.noise_multiplier, silo.plan.plan.sample_rate, silo.plan.plan.steps
        else:
            sigma = rate = steps = None
        if steps is not None:
            entry |= {"noiseMultiplier": sigma, "sampleRate": rate, "steps": steps,
                      "stepsPerRound": steps // s.spec.rounds, "delta": s.spec.delta}  # fmt: skip
        if claim is not None:
            entry |= {"claim": claim.state.value, "epsilonClaimed": claim.epsilon}
            if claim.state is ClaimState.COMMITTED:
                entry["epsilonSpent"] = claim.epsilon
        why = refused.get(name)
        if why is not None and claim is None:
            entry |= {"reason": why[0], "message": why[1]}
        entries.append(entry)
    return entries


def _consented(refused: Refusals) -> Condition:
    problems = {name: why for name, why in refused.items() if why is not None}
    if not problems:
        return Condition(CONSENTED, True, "Consented", "every silo's budget consents to this round and covers its data")
    first = next(iter(problems.values()))
    text = "; ".join(f"silo {name}: {why[1]}" for name, why in problems.items())
    return Condition(CONSENTED, False, first[0], text)


def _reserved(claims: Claims) -> Condition:
    states = {name: (c.state.value if c is not None else "not claimed") for name, c in claims.items()}
    held = all(c is not None and c.state in (ClaimState.RESERVED, ClaimState.COMMITTED) for c in claims.values())
    detail = ", ".join(f"{name}: {state}" for name, state in states.items())
    return Condition(BUDGET_RESERVED, held, "Reserved" if held else "NotReserved", detail)


def _fields(s: Snapshot, claims: Claims, refused: Refusals, result: Mapping[str, Any] | None) -> dict[str, Any]:
    history = (result or {}).get("history") or []
    fields: dict[str, Any] = {
        "rounds": s.spec.rounds,
        "roundsCompleted": int((result or {}).get("roundsCompleted") or 0),
        "participants": _participants(s, claims, refused, result),
    }
    if history:
        fields["submitted"] = f"{len(history[-1].get('submitted') or ())}/{len(s.silos)}"
    if (result or {}).get("digest"):
        assert result is not None
        fields["model"] = {"digest": result["digest"], "artifact": result.get("artifact")}
        # Accuracy only as the aggregator measured it on the public spec.evaluation (absent without one).
        if s.spec.evaluation is not None and result.get("accuracy") is not None:
            fields["model"] |= {"accuracy": result["accuracy"], "evaluationExamples": result.get("evaluationExamples")}
    return fields


def accuracy_text(s: Snapshot, result: Mapping[str, Any]) -> str:
    """The global model's accuracy on the public evaluation source, or why there is none."""
    if s.spec.evaluation is None:
        return "no accuracy (no public evaluation source is declared in spec.evaluation)"
    return (f"accuracy {result.get('accuracy')} on {result.get('evaluationExamples')} examples of the public "
            f"{s.spec.evaluation}")  # fmt: skip


def _outcome(s: Snapshot, claims: Claims, refused: Refusals, phase: Phase, ready: Condition, *extra: Condition,
             result: Mapping[str, Any] | None = None, progress: Progress = Progress.WORKING,
             warning: bool = False) -> Outcome:  # fmt: skip
    conditions = (_consented(refused), _reserved(claims), *extra)
    return Outcome(phase, ready, conditions, _fields(s, claims, refused, result), warning, progress)


def pending(s: Snapshot, claims: Claims, refused: Refusals) -> Outcome:
    """Checks failed for a silo without a claim (Stalled: a person must act), or claims are being made or wait."""
    problems = [(name, why) for name, why in refused.items() if why is not None and claims.get(name) is None]
    if problems:
        name, (reason, message) = problems[0]
        text = f"silo {name}: {message}" + (f" (and {len(problems) - 1} more silos)" if len(problems) > 1 else "")
        return _outcome(s, claims, refused, Phase.PENDING, Condition(READY, False, reason, text),
                        progress=Progress.STALLED, warning=True)  # fmt: skip
    waiting = [name for name, c in claims.items() if c is not None and c.state is ClaimState.WAITING]
    if waiting:
        text = f"waiting for the budgets of {', '.join(waiting)} to grant their claims"
        return _outcome(s, claims, refused, Phase.PENDING, Condition(READY, False, "WaitingForBudget", text))
    text = f"claiming each silo's ε={s.spec.epsilon:g} from its own budget"
    return _outcome(s, claims, refused, Phase.PENDING, Condition(READY, False, "Claiming", text))


def not_started(s: Snapshot, claims: Claims, refused: Refusals, reason: str, message: str, *, stalled: bool) -> Outcome:
    """The starting model cannot be used (yet)."""
    progress = Progress.STALLED if stalled else Progress.WORKING
    return _outcome(s, claims, refused, Phase.PENDING, Condition(READY, False, reason, message), progress=progress,
                    warning=stalled)  # fmt: skip


def blocked(s: Snapshot, claims: Claims, reason: str, message: str) -> Outcome:
    """Something only a person can resolve (a CA Secret that cannot be read)."""
    return _outcome(s, claims, {}, Phase.PENDING, Condition(READY, False, reason, message), progress=Progress.STALLED,
                    warning=True)  # fmt: skip


def failed_before_start(s: Snapshot, claims: Claims, refused: Refusals, reason: str, message: str, *,
                        settling: bool) -> Outcome:  # fmt: skip
    """A claim was refused for good: the round cannot run, and every other claim is given back or settled."""
    text = f"{message}; the round cannot run" + ("; settling the other silos' claims" if settling else "")
    return _outcome(s, claims, refused, Phase.FAILED, Condition(READY, False, reason, text),
                    progress=Progress.WORKING if settling else Progress.STALLED, warning=True)  # fmt: skip


def running(s: Snapshot, claims: Claims, started: bool) -> Outcome:
    """Every claim is held: the round's keys, aggregator and SuperNodes are being made, or run."""
    if not started:
        text = "every silo's claim is reserved; creating the round's keys, SuperLink and aggregator"
    else:
        text = f"the aggregator runs {s.spec.rounds} FedAvg round(s) over {len(s.silos)} silos"
        if s.spec.secure_aggregation:
            text += f" under SecAgg+ (threshold {s.spec.threshold})"
    return _outcome(s, claims, {}, Phase.RUNNING, Condition(READY, False, "Running", text))


def ended(s: Snapshot, claims: Claims, result: Mapping[str, Any], *, settling: bool) -> Outcome:
    """The aggregator's run ended: Succeeded with the global model, or Failed with its error."""
    done = int(result.get("roundsCompleted") or 0)
    progress = Progress.WORKING if settling else Progress.DONE
    suffix = "; settling the silos' claims" if settling else ""
    if result.get("status") == "Succeeded":
        text = (f"{done} of {s.spec.rounds} rounds completed; global model {result.get('digest')}, "
                f"{accuracy_text(s, result)}{suffix}")  # fmt: skip
        aggregated = Condition(AGGREGATED, True, "Succeeded", text)
        return _outcome(s, claims, {}, Phase.SUCCEEDED, Condition(READY, not settling, "Succeeded", text), aggregated,
                        result=result, progress=progress)  # fmt: skip
    error = str(result.get("error") or "the aggregator failed")
    text = f"failed after {done} of {s.spec.rounds} rounds: {error}{suffix}"
    aggregated = Condition(AGGREGATED, False, "Failed", text)
    return _outcome(s, claims, {}, Phase.FAILED, Condition(READY, False, "Failed", text), aggregated, result=result,
                    progress=progress if settling else Progress.STALLED, warning=True)  # fmt: skip
