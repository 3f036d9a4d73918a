"""What a SecureModel's status says at each point of its lifecycle (pure builders of :class:`Outcome`).

Conditions besides Ready, Reconciling and Stalled: ``BudgetReserved`` (the claim of the spec's
training version is held or spent), ``Trained``, ``Compressed``. Phase: WaitingForBudget →
Training → Compressing → Deploying → Serving, or Failed. A model serving a FederatedRound's
model (``spec.model.fromRound``) has no ``BudgetReserved``; its ``Trained`` is the round's, and its
phase is WaitingForRound → Compressing → Deploying → Serving, or Failed. A fine-tuning
(``spec.model.from``) whose starting weights are not available is WaitingForSource, and claims nothing.
A public model (``spec.privacy.public``) has ``PublicData`` instead of ``BudgetReserved``: True while no
budget of its namespace protects its data, False (``DataProtected``...) once one does; refused before
training it is Failed and Stalled (WaitingForBudget while the operator has not read every budget yet).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from securemodel.api.privacy_budget import RejectionReason
from securemodel.api.secure_model import Phase
from securemodel.operator.conditions import READY, Condition, Outcome, Progress
from securemodel.operator.budget.directory import NOT_OBSERVED, Refusal
from securemodel.operator.secure_model.rounds import ROUND_FAILED, WAITING_FOR_ROUND, RoundModel, RoundProblem
from securemodel.operator.secure_model.starts import SOURCE_NOT_READY
from securemodel.privacy import Claim, ClaimState

BUDGET_RESERVED: Final = "BudgetReserved"
PUBLIC_DATA: Final = "PublicData"
NOT_PROTECTED: Final = "NotProtected"
PUBLIC_NOTE: Final = "trained without differential privacy on public data no PrivacyBudget of the namespace covered"
TRAINED: Final = "Trained"
COMPRESSED: Final = "Compressed"


def _outcome(
    phase: Phase,
    ready: bool,
    reason: str,
    message: str,
    *conditions: Condition,
    progress: Progress = Progress.WORKING,
    warning: bool = False,
) -> Outcome:
    return Outcome(phase, Condition(READY, ready, reason, message), tuple(conditions), {}, warning, progress)


def budget_missing(budget: str) -> Outcome:
    text = f"PrivacyBudget {budget} does not exist in this namespace; the claim is made once it does"
    return _outcome(Phase.WAITING_FOR_BUDGET, False, "BudgetNotFound", text,
                    Condition(BUDGET_RESERVED, False, "BudgetNotFound", text), progress=Progress.STALLED, warning=True)  # fmt: skip


def budget_refused(budget: str, reason: str, message: str) -> Outcome:
    """No claim, for ``reason``: Stalled (it takes a change to a spec), except while the operator has not yet read
    the budget's spec (``BudgetNotObserved``), which passes by itself: Reconciling, so GitOps tools wait."""
    text = f"no ε claimed from PrivacyBudget {budget}: {message}"
    transient = reason == NOT_OBSERVED
    return _outcome(Phase.WAITING_FOR_BUDGET, False, reason, text, Condition(BUDGET_RESERVED, False, reason, text),
                    progress=Progress.WORKING if transient else Progress.STALLED, warning=not transient)  # fmt: skip


def calibration_failed(budget: str, error: str) -> Outcome:
    text = f"no ε claimed from PrivacyBudget {budget}: {error}"
    return _outcome(Phase.FAILED, False, "CalibrationFailed", text,
                    Condition(BUDGET_RESERVED, False, "CalibrationFailed", text), progress=Progress.STALLED, warning=True)  # fmt: skip


def claiming(budget: str, training: str) -> Outcome:
    text = f"training version {training} claims its ε from PrivacyBudget {budget}"
    return _outcome(Phase.WAITING_FOR_BUDGET, False, "Claiming", text, Condition(BUDGET_RESERVED, False, "Claiming", text))


def finishing_left(job: str, version: str) -> Outcome:
    text = (
        f"the spec changed while training version {version} ran: Job {job} runs to its end and is charged, "
        "then the new version claims its ε"
    )
    return _outcome(Phase.TRAINING, False, "FinishingPreviousVersion", text,
                    Condition(BUDGET_RESERVED, False, "FinishingPreviousVersion", text))  # fmt: skip


def claim_outcome(budget: str, claim: Claim) -> Outcome | None:
    """The status of a claim that has not reached training: waiting, or refused for good (None otherwise)."""
    asked = f"ε={claim.epsilon:g}, δ={claim.delta:g}"
    match claim.state:
        case ClaimState.WAITING:
            text = f"waiting for PrivacyBudget {budget} to grant the claim of {asked}"
            return _outcome(Phase.WAITING_FOR_BUDGET, False, "WaitingForBudget", text,
                            Condition(BUDGET_RESERVED, False, ClaimState.WAITING, text))  # fmt: skip
        case ClaimState.REJECTED:
            if claim.reason is RejectionReason.DELTA_ABOVE_BUDGET:
                why = f"δ={claim.delta:g} is above the δ it allows"
            else:
                why = f"ε={claim.epsilon:g} is more than its whole ε"
            text = f"PrivacyBudget {budget} rejected the claim of {asked}: {why}"
            reason = claim.reason or ClaimState.REJECTED
            return _outcome(Phase.FAILED, False, reason, text, Condition(BUDGET_RESERVED, False, reason, text),
                            progress=Progress.STALLED, warning=True)  # fmt: skip
        case ClaimState.RELEASED:
            text = (
                f"the claim of {asked} on PrivacyBudget {budget} for this version of the spec was given back "
                "(no container of its training ever ran); a released claim is not renewed: change the spec to "
                "claim for a new version"
            )
            return _outcome(Phase.FAILED, False, ClaimState.RELEASED, text,
                            Condition(BUDGET_RESERVED, False, ClaimState.RELEASED, text),
                            progress=Progress.STALLED, warning=True)  # fmt: skip
    return None


def reserved_condition(budget: str, claim: Claim) -> Condition:
    if claim.state is ClaimState.COMMITTED:
        return Condition(BUDGET_RESERVED, True, ClaimState.COMMITTED,
                         f"ε={claim.epsilon:.6g} spent and committed to PrivacyBudget {budget}")  # fmt: skip
    return Condition(BUDGET_RESERVED, True, ClaimState.RESERVED,
                     f"ε={claim.epsilon:g}, δ={claim.delta:g} reserved from PrivacyBudget {budget}")  # fmt: skip


def public_condition(source: str, refusal: Refusal | None) -> Condition:
    """``PublicData`` of a public model: whether its data may be read without differential privacy now."""
    if refusal is None:
        return Condition(PUBLIC_DATA, True, NOT_PROTECTED, f"no PrivacyBudget of the namespace protects {source}: "
                         "it is trained on without differential privacy and nothing is claimed")  # fmt: skip
    return Condition(PUBLIC_DATA, False, refusal.reason, refusal.message)


def public_refused(refusal: Refusal) -> Outcome:
    """A public model whose data may not be read (nothing is trained): Failed and Stalled until a budget or the spec
    changes, except while the operator has not read every budget of the namespace (``BudgetNotObserved``)."""
    transient = refusal.reason == NOT_OBSERVED
    text = f"not trained: {refusal.message}"
    return _outcome(Phase.WAITING_FOR_BUDGET if transient else Phase.FAILED, False, refusal.reason, text,
                    Condition(PUBLIC_DATA, False, refusal.reason, refusal.message),
                    progress=Progress.WORKING if transient else Progress.STALLED, warning=not transient)  # fmt: skip


def public_stopped(job: str, refusal: Refusal | None) -> Outcome:
    """A public training stopped, because a budget came to protect its data while it ran (``refusal``) or earlier
    (the spec left its version, or a budget protected the data then): not resumed."""
    why = refusal.message if refusal is not None else "it was stopped earlier"
    text = f"Job {job} is stopped and not resumed ({why}); change the spec to train a new version"
    conditions = (Condition(PUBLIC_DATA, False, refusal.reason, refusal.message),) if refusal is not None else ()
    return _outcome(Phase.FAILED, False, "TrainingStopped", text, *conditions,
                    Condition(TRAINED, False, "TrainingStopped", text), progress=Progress.STALLED, warning=True)  # fmt: skip


def public_trained_condition(result: Mapping[str, Any] | None) -> Condition:
    if result is None:
        return Condition(TRAINED, True, "Succeeded", "the public training finished; its pod's report is no longer available")
    return Condition(TRAINED, True, "Succeeded", f"{int(result.get('steps') or 0)} steps without differential privacy "
                     f"({int(result.get('epochs') or 0)} epochs of public data); no ε claimed or spent")  # fmt: skip


def public_privacy(source: str) -> dict[str, Any]:
    """``status.privacy`` of a public model: no claim, no ε."""
    return {"privacy": {"public": True, "note": f"{PUBLIC_NOTE} when it was read ({source}); no ε was claimed or spent"}}


def training(job: str, pending: str, running: bool, reserved: Condition, *, public: bool = False) -> Outcome:
    if running:
        text = f"Job {job} is training {'without differential privacy (public data)' if public else 'with DP-SGD'}"
        return _outcome(Phase.TRAINING, False, "Training", text, reserved, Condition(TRAINED, False, "Training", text))
    text = f"Job {job} created; {pending or 'its pod has not started'}"
    return _outcome(Phase.TRAINING, False, "TrainingPending", text, reserved, Condition(TRAINED, False, "Pending", text))


def training_stopped(job: str, why: str, reserved: Condition) -> Outcome:
    text = f"Job {job} cannot run and is deleted ({why}); its claim is released once it is gone"
    return _outcome(Phase.FAILED, False, "TrainingCannotStart", text, reserved,
                    Condition(TRAINED, False, "TrainingCannotStart", text), progress=Progress.STALLED, warning=True)  # fmt: skip


def training_failed(job: str, error: str, reserved: Condition) -> Outcome:
    text = f"Job {job} failed: {error}"
    return _outcome(Phase.FAILED, False, "TrainingFailed", text, reserved,
                    Condition(TRAINED, False, "TrainingFailed", text), progress=Progress.STALLED, warning=True)  # fmt: skip


def trained_condition(result: Mapping[str, Any] | None, epsilon: float | None) -> Condition:
    if result is None:
        return Condition(TRAINED, True, "Succeeded", "the training finished; its pod's report is no longer available")
    spent = f", ε={epsilon:.6g}" if epsilon is not None else ""
    return Condition(TRAINED, True, "Succeeded", f"{int(result.get('steps') or 0)} DP-SGD steps{spent}")


def waiting_for_start(reason: str, message: str) -> Outcome:
    """The weights ``spec.model.from`` names are not available: nothing is claimed until they are."""
    stalled = reason != WAITING_FOR_ROUND and reason != SOURCE_NOT_READY
    failed = reason == ROUND_FAILED
    text = f"the starting weights are not available: {message}"
    return _outcome(Phase.FAILED if failed else Phase.WAITING_FOR_SOURCE, False, reason, text,
                    Condition(TRAINED, False, reason, text),
                    progress=Progress.STALLED if stalled else Progress.WORKING, warning=failed)  # fmt: skip


def round_problem(problem: RoundProblem) -> Outcome:
    """The model's FederatedRound is missing, running or failed: nothing to compress yet."""
    failed = problem.reason == ROUND_FAILED
    progress = Progress.STALLED if problem.stalled else Progress.WORKING
    return _outcome(Phase.FAILED if failed else Phase.WAITING_FOR_ROUND, False, problem.reason, problem.message,
                    Condition(TRAINED, False, problem.reason, problem.message), progress=progress, warning=failed)  # fmt: skip


def round_condition(found: RoundModel) -> Condition:
    """``Trained``: by the FederatedRound, whose global model the model serves."""
    return Condition(TRAINED, True, "TrainedByFederatedRound", f"the global model of FederatedRound {found.name} after "
                     f"{found.rounds} FedAvg round(s), {found.digest}; no claim: its silos paid")  # fmt: skip


def round_kept(name: str) -> Condition:
    """``Trained``: by a FederatedRound that is gone or changed since its model was compressed for this version."""
    return Condition(TRAINED, True, "TrainedByFederatedRound", f"the global model of FederatedRound {name}, compressed "
                     "for this version before the round was deleted or changed; no claim: its silos paid")  # fmt: skip


def compressing(job: str) -> Outcome:
    text = f"Job {job} is pruning and quantising the trained model"
    return _outcome(Phase.COMPRESSING, False, "Compressing", text, Condition(COMPRESSED, False, "Compressing", text))


def compression_failed(job: str, error: str) -> Outcome:
    text = f"Job {job} failed: {error}"
    return _outcome(Phase.FAILED, False, "CompressionFailed", text,
                    Condition(COMPRESSED, False, "CompressionFailed", text), progress=Progress.STALLED, warning=True)  # fmt: skip


def compressed_condition(result: Mapping[str, Any] | None) -> Condition:
    if result is None:
        return Condition(COMPRESSED, True, "Succeeded", "compressed; the pod's report is no longer available")
    return Condition(
        COMPRESSED,
        True,
        "Succeeded",
        f"{result.get('sizeBytes')} → {result.get('compressedSizeBytes')} bytes "
        f"(sparsity {result.get('sparsity')}, {result.get('quantization')}), {_accuracy(result)}",
    )


def _accuracy(result: Mapping[str, Any]) -> str:
    """The accuracy a compress pod measured on the public evaluation source, or why there is none."""
    if result.get("compressedAccuracy") is None:
        return "no accuracy (no public evaluation source is declared in spec.data.evaluation)"
    return (f"accuracy {result.get('compressedAccuracy')} (uncompressed {result.get('accuracy')}) on "
            f"{result.get('evaluationExamples')} examples of the public {result.get('evaluationSource')}")  # fmt: skip


def serving(deployment: Mapping[str, Any] | None, replicas: int, failure: tuple[str, str] | None, current: bool) -> Outcome:
    """Deploying until the Deployment has ``replicas`` available pods of its current template; Stalled with the
    ``failure`` (reason, message) of a crashing pod."""
    if deployment is None:
        return _outcome(Phase.DEPLOYING, False, "Deploying", "the serving Deployment is being created")
    status = deployment.get("status") or {}
    name = deployment["metadata"]["name"]
    observed = (status.get("observedGeneration") or 0) >= (deployment["metadata"].get("generation") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if current and observed and replicas == 0:
        return _outcome(Phase.SERVING, True, "ScaledToZero", f"Deployment {name} has 0 replicas", progress=Progress.DONE)
    if current and observed and updated >= replicas and available >= replicas:
        return _outcome(Phase.SERVING, True, "Serving", f"{available}/{replicas} replicas available", progress=Progress.DONE)
    if failure:
        return _outcome(Phase.DEPLOYING, False, failure[0], failure[1], progress=Progress.STALLED, warning=True)
    return _outcome(Phase.DEPLOYING, False, "Deploying", f"Deployment {name}: {available}/{replicas} replicas available")


def while_serving(outcome: Outcome, serving: str | None, available: bool) -> Outcome:
    """``outcome`` of a version not serving yet, with Ready True while version ``serving`` still answers.

    Reconciling and Stalled still say where the spec's version stands, so a GitOps tool waits for it.
    """
    if not serving or not available or outcome.ready.status:
        return outcome
    ready = Condition(READY, True, "Serving", f"version {serving} serves; the spec's version: {outcome.ready.message}")
    return Outcome(outcome.phase, ready, outcome.conditions, outcome.fields, outcome.warning, outcome.progress)


def with_fields(outcome: Outcome, conditions: tuple[Condition, ...], fields: Mapping[str, Any]) -> Outcome:
    """``outcome`` with the conditions and fields of the stages before it."""
    merged = {**fields, **outcome.fields}
    return Outcome(outcome.phase, outcome.ready, (*conditions, *outcome.conditions), merged, outcome.warning,
                   outcome.progress)  # fmt: skip


def blocked(outcome: Outcome, reason: str, message: str) -> Outcome:
    """``outcome`` with Ready False for ``reason``: something only a person can resolve (Stalled)."""
    return Outcome(outcome.phase, Condition(READY, False, reason, message), outcome.conditions, outcome.fields,
                   True, Progress.STALLED)  # fmt: skip
