"""What a SecureModel needs now, decided from a snapshot of what exists (pure: no API calls).

:func:`decide` maps a :class:`Snapshot` (the typed spec, the ledger of its budget, the
operator's calibration and the children as the watch last saw them) to a :class:`Decision`:
the ledger actions, the children to apply or create, the Jobs to stop, the key Secrets to
write, and the status. Nothing is read from the model's status: the claim and its settlement
marks come from the ledger, the version being served from the serving Deployment, and what
the workers reported from their pods (kept in the results ConfigMap for display only).

Order of work for the spec's training version ``T``:

1. claims of versions the spec left are settled (:mod:`.settlement`); a training of one of
   them that ran keeps running to its end, and ``T`` claims only after it is charged;
2. ``T`` claims its ε (once kopf's finalizer is on the model, so deleting the model settles it);
3. once Reserved, the claim is marked dispatched and then the train Job is created;
4. the claim is settled when the Job ends; the trained artifact is compressed (one compress
   Job per version) and served, while the version served before keeps serving.

A public model (``spec.privacy.public``, :func:`_decide_public`) claims nothing and is charged
nothing: its train Job is created, with the worker's ``--public``, only while no budget of the
namespace protects any of its data, all budgets of the namespace being known (``refusal``, see
:mod:`.observe`; :mod:`.act` checks again with a quorum list just before it creates the Job).
A budget that comes to protect the data later stops a training still running (its Job is
suspended and not resumed) and turns ``PublicData`` False; a model trained before keeps being
compressed and served (the data was public when it was read), but trains no new version and can
no longer be a starting point (:func:`.starts.public_source`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from securemodel.operator.budget.directory import DATA_PROTECTED, EVALUATION_PROTECTED, START_PROTECTED, Refusal
from securemodel.operator.conditions import Condition, Outcome, Progress
from securemodel.operator.kube import drifted
from securemodel.operator.secure_model import children, network, outcomes
from securemodel.operator.secure_model.calibration import Plan
from securemodel.operator.secure_model.children import Owner, Run
from securemodel.operator.secure_model.jobs import JobPhase, JobView, PodView, job_view, pod_view
from securemodel.operator.secure_model.keys import (
    ClientLimits,
    UnreadableAuthority,
    Write,
    allow_list,
    removed_clients,
    wanted_secrets,
)
from securemodel.operator.secure_model.rounds import RoundModel, privacy_fields, round_privacy
from securemodel.operator.secure_model.settlement import Act, Settlement, settle
from securemodel.operator.secure_model.spec import ModelSpecs, PrivacySpec, Versions
from securemodel.operator.secure_model.starts import InitProblem, Start, train_parts
from securemodel.privacy import Calibration, Claim, ClaimState, Consumer, DpSgd, Ledger, Mechanism, dp_sgd_epsilon

KIND = "SecureModel"


class Verb(StrEnum):
    SUBMIT = "submit"
    DISPATCH = "dispatch"
    START = "start"
    COMMIT = "commit"
    RELEASE = "release"


@dataclass(frozen=True)
class LedgerAction:
    """One change of the budget's ledger. A RELEASE with ``gone`` set is written only once the
    train Job of that name and every train pod of ``version`` are gone (checked just before)."""

    verb: Verb
    key: str
    consumer: Consumer | None = None
    epsilon: float = 0.0
    delta: float = 0.0
    gone: str | None = None
    version: str = ""
    mechanism: Mechanism | None = None  # SUBMIT: what is claimed; COMMIT: what ran (None: the whole claim)


@dataclass(frozen=True)
class Snapshot:
    """Everything :func:`decide` reads, gathered by :mod:`.observe`."""

    owner: Owner
    generation: int
    deleting: bool
    finalized: bool  # kopf's finalizer is on the model
    rotation: str | None
    spec: ModelSpecs
    image: str
    own_code: bool  # the operator's worker image and a built-in architecture
    ledger: Ledger | None  # None: the budget does not exist
    refusal: Refusal | None  # why the budget may not be charged for this model (coverage, overlap)
    plan: Plan | None
    calibration: Calibration | None
    calibration_error: str | None
    jobs: Mapping[str, Mapping[str, Any]]  # the model's Jobs by name
    pods: tuple[Mapping[str, Any], ...]  # the model's pods
    deployment: Mapping[str, Any] | None
    service: Mapping[str, Any] | None
    pvc: Mapping[str, Any] | None
    results: Mapping[str, Any] | None  # the results ConfigMap
    secrets: Mapping[str, Mapping[str, Any]]  # the model's Secrets by name
    now: datetime
    artifacts_storage: str = "256Mi"
    allow_list: Mapping[str, Any] | None = None  # the allow-list ConfigMap
    client_limits: ClientLimits = ClientLimits()  # each serving pod's share of spec.serving.clientLimits
    network_policies: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # the model's, by name
    metrics_namespace: str | None = None  # the namespace whose pods may scrape the serving pods' metrics
    round: RoundModel | RoundProblem | None = None  # spec.model.fromRound: the round's global model, or why none
    start: Start | None = None  # spec.model.from: the weights the training starts from, or why they are missing

    @property
    def versions(self) -> Versions:
        return self.spec.versions

    @property
    def privacy(self) -> PrivacySpec:
        """``spec.privacy`` of a model that trains under a budget (every model without ``fromRound`` or ``public``)."""
        assert isinstance(self.spec.privacy, PrivacySpec), "a model that claims has spec.privacy's budget form"
        return self.spec.privacy

    @property
    def consumer(self) -> Consumer:
        return Consumer(KIND, self.owner.namespace, self.owner.name, self.owner.uid, self.versions.training)


# A Job's manifest, rendered when it is about to be created (a pass waiting on the ledger holds none).
JobRecipe = Callable[[], dict[str, Any]]


@dataclass(frozen=True)
class Decision:
    ledger: tuple[LedgerAction, ...] = ()
    apply: tuple[dict[str, Any], ...] = ()  # server-side applied
    create: tuple[dict[str, Any], ...] = ()  # created if absent (compress Jobs)
    train: tuple[str, JobRecipe] | None = None  # (claim key, the train Job): created once the claim is dispatched
    stop: tuple[str, ...] = ()  # train Jobs to suspend (their pods are deleted; none is created again)
    secrets: tuple[Write, ...] = ()
    delete_secrets: tuple[str, ...] = ()
    unhold: tuple[tuple[str, str, bool], ...] = ()  # train pods to take the settlement finalizer off: (pod, claim key, ran)
    delete_jobs: tuple[str, ...] = ()  # train Jobs to delete: a released claim's, or all on deletion
    outcome: Outcome | None = None
    settled: bool = True  # on deletion: no live claim and no train pod is left
    quiet: bool = False  # the outcome is about to change (a claim is being made): not worth publishing
    public_train: dict[str, Any] | None = None  # a public model's train Job: created if absent and still unprotected


# --- reading the children ------------------------------------------------------------------------


def _label(obj: Mapping[str, Any], key: str) -> str:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(key, "")


def _controlled_by(pod: Mapping[str, Any], job: Mapping[str, Any]) -> bool:
    uid = job["metadata"].get("uid")
    return any(ref.get("uid") == uid and ref.get("controller") for ref in pod["metadata"].get("ownerReferences") or ())


def train_views(s: Snapshot, version: str) -> tuple[JobView | None, tuple[PodView, ...]]:
    """The train Job of ``version`` with the pods it controls, and the other train pods of ``version``
    (whose Job is gone, or that only carry its labels): those count as runs, never as reports."""
    name = children.train_job_name(s.owner.name, version)
    pods = [p for p in s.pods if _label(p, children.COMPONENT_LABEL) == "train" and _label(p, children.VERSION_LABEL) == version]
    job = s.jobs.get(name)
    if job is None:
        return None, tuple(pod_view(p, "train", "TrainResult") for p in pods)
    own = [pod_view(p, "train", "TrainResult") for p in pods if _controlled_by(p, job)]
    others = tuple(pod_view(p, "train", "TrainResult") for p in pods if not _controlled_by(p, job))
    return job_view(job, own), others


def compress_view(s: Snapshot, versions: Versions) -> JobView | None:
    name = children.compress_job_name(s.owner.name, versions.version)
    job = s.jobs.get(name)
    if job is None:
        return None
    pods = [p for p in s.pods if (p.get("metadata") or {}).get("labels", {}).get("job-name") == name]
    return job_view(job, [pod_view(p, "compress", "CompressResult") for p in pods])


def stored_results(s: Snapshot) -> dict[str, Any]:
    data = (s.results or {}).get("data") or {}
    out: dict[str, Any] = {}
    for key, text in data.items():
        try:
            out[key] = json.loads(text)
        except ValueError:
            continue
    return out


# --- the decision --------------------------------------------------------------------------------


class _Work:
    """The decision being built (a private accumulator: decide stays a function of the snapshot)."""

    def __init__(self) -> None:
        self.ledger: list[LedgerAction] = []
        self.apply: list[dict[str, Any]] = []
        self.create: list[dict[str, Any]] = []
        self.train: tuple[str, JobRecipe] | None = None
        self.stop: list[str] = []
        self.secrets: list[Write] = []
        self.delete_secrets: list[str] = []
        self.unhold: list[tuple[str, str, bool]] = []
        self.delete_jobs: list[str] = []
        self.quiet = False
        self.public_train: dict[str, Any] | None = None

    def settle(self, claim: Claim, job: JobView | None, orphans: tuple[PodView, ...], ending: Settlement) -> None:
        key, act = claim.consumer.key, ending.act
        ran = any(p.ran for p in (*(job.pods if job else ()), *orphans))
        if ran and claim.started is None and claim.state is ClaimState.RESERVED:
            self.ledger.append(LedgerAction(Verb.START, key))
        if act is Act.COMMIT:
            run = claim.mechanism if isinstance(claim.mechanism, DpSgd) else None
            ran_mechanism = DpSgd(run.noise_multiplier, run.sample_rate, ending.steps) if run and ending.steps is not None else None
            self.ledger.append(LedgerAction(Verb.COMMIT, key, epsilon=ending.epsilon, mechanism=ran_mechanism))
        elif act is Act.RELEASE:
            gone = children.train_job_name(claim.consumer.name, claim.consumer.version) if claim.dispatched else None
            self.ledger.append(LedgerAction(Verb.RELEASE, key, gone=gone, version=claim.consumer.version))
        elif act is Act.STOP and job is not None and not job.suspended:
            self.stop.append(job.name)

    def decision(self, outcome: Outcome | None, *, settled: bool = True) -> Decision:
        return Decision(tuple(self.ledger), tuple(self.apply), tuple(self.create), self.train, tuple(self.stop),
                        tuple(self.secrets), tuple(self.delete_secrets), tuple(self.unhold), tuple(self.delete_jobs),
                        outcome, settled, self.quiet, self.public_train)  # fmt: skip

    def release_pods(self, s: Snapshot) -> None:
        """Let go of the train pods that can run no more; one that ran only once its claim records it (act checks)."""
        for pod in s.pods:
            if _label(pod, children.COMPONENT_LABEL) != "train":
                continue
            view = pod_view(pod, "train", "TrainResult")
            if view.held and view.settled:
                self.unhold.append((view.name, f"{s.owner.uid}/{_label(pod, children.VERSION_LABEL)}", view.ran))


def run_of(s: Snapshot, claim: Claim) -> Run | None:
    """σ, q and steps of ``claim``: the DP-SGD mechanism recorded in the ledger when it was claimed, else
    (a claim from before mechanisms were recorded) the operator's calibration of the spec's version."""
    if isinstance(claim.mechanism, DpSgd):
        return Run(claim.mechanism.noise_multiplier, claim.mechanism.sample_rate, claim.mechanism.steps)
    if s.calibration is None or s.plan is None or claim.consumer.version != s.versions.training:
        return None
    return Run(s.calibration.noise_multiplier, s.plan.sample_rate, s.plan.steps)


def credit_for(s: Snapshot, claim: Claim) -> Callable[[int], float] | None:
    """ε of ``steps`` at the operator's own σ and q for ``claim``."""
    run = run_of(s, claim)
    if run is None:
        return None
    sigma, rate, delta, accountant = run.noise_multiplier, run.sample_rate, claim.delta, s.privacy.accountant
    return lambda steps: 0.0 if steps == 0 else float(dp_sgd_epsilon(sigma, rate, steps, delta, accountant))


def _settle(s: Snapshot, claim: Claim, job: JobView | None, orphans: tuple[PodView, ...], *, wanted: bool) -> Settlement:
    run = run_of(s, claim)
    return settle(claim, job, orphans, wanted=wanted, deleting=s.deleting, own_code=s.own_code,
                  planned_steps=run.steps if run else None, credit=credit_for(s, claim))  # fmt: skip


def decide(s: Snapshot) -> Decision:
    """The decision for a model that is not being deleted (see the module docstring)."""
    work = _Work()
    if s.deleting:
        return decide_deletion(s)
    if s.spec.model.from_round is not None:
        return _decide_from_round(s, work)
    if s.spec.public:
        return _decide_public(s, work)
    budget = s.privacy.budget_ref
    # The train and compress pods' connections are closed before any of them exists: applied in the first pass,
    # kept while the model lives (the serving pods' policy comes before their Deployment, see _serve).
    work.apply += _unisolated(s)
    if s.ledger is None:
        return work.decision(outcomes.with_fields(outcomes.budget_missing(budget), (), {"version": s.versions.version}))
    finishing = _settle_left(s, work)
    served = _served_versions(s)
    claim = s.ledger.claim(s.consumer.key)
    outcome = _claim_stage(s, work, claim, finishing)
    if outcome is None:
        assert claim is not None
        outcome = _pipeline(s, work, claim)
    if served is not None or (claim is not None and claim.state in (ClaimState.RESERVED, ClaimState.COMMITTED)):
        outcome = _keys(s, work, outcome)
        work.apply += [obj for obj in (children.artifacts_pvc(s.owner, s.artifacts_storage),) if _drifted_pvc(obj, s.pvc)]
    if served is not None and s.versions.version != served.version:
        outcome = _serve(s, work, served, outcome, current=False)
    _record_results(s, work)
    work.release_pods(s)
    work.delete_jobs += _released_jobs(s)
    return work.decision(outcomes.with_fields(outcome, (), {"version": s.versions.version}))


def _decide_from_round(s: Snapshot, work: _Work) -> Decision:
    """A model serving a FederatedRound's global model: no claim and no training; compress it once the round
    has succeeded, then serve it. The round is needed only until the spec's version is compressed (the model's
    own artifact): while it is missing, running or failed before that, a version served before keeps serving
    and the status says why the spec's version waits."""
    work.apply += _unisolated(s)
    served = _served_versions(s)
    found = s.round
    name = s.spec.model.from_round
    assert found is not None and name is not None, "observe resolves the round of spec.model.fromRound"
    if isinstance(found, RoundModel) or _compressed_digest(s, s.versions) is not None:
        trained = outcomes.round_condition(found) if isinstance(found, RoundModel) else outcomes.round_kept(name)
        fields = {"privacy": privacy_fields(found) if isinstance(found, RoundModel) else round_privacy(name),
                  "endpoint": children.endpoint(s.owner.name, s.owner.namespace)}  # fmt: skip
        outcome = _keys(s, work, _compress_and_serve(s, work, (trained,), fields))
        work.apply += [obj for obj in (children.artifacts_pvc(s.owner, s.artifacts_storage),) if _drifted_pvc(obj, s.pvc)]
    else:
        outcome = outcomes.round_problem(found)
        if served is not None:
            outcome = _keys(s, work, outcome)
    if served is not None and s.versions.version != served.version:
        outcome = _serve(s, work, served, outcome, current=False)
    _record_results(s, work)
    return work.decision(outcomes.with_fields(outcome, (), {"version": s.versions.version}))


# Refusals that mean a budget of the namespace protects data the public model reads.
_PROTECTED = frozenset({DATA_PROTECTED, EVALUATION_PROTECTED, START_PROTECTED})


def _decide_public(s: Snapshot, work: _Work) -> Decision:
    """A public model (see the module docstring): no ledger. Train once no budget protects its data, then compress
    and serve. Train Jobs of versions the spec left are stopped (they claim nothing: nothing to settle)."""
    work.apply += _unisolated(s)
    assert s.spec.data is not None, "a model that trains has spec.data (a CEL rule)"
    source, training = s.spec.data.source, s.versions.training
    served = _served_versions(s)
    job, orphans = train_views(s, training)
    job_name = children.train_job_name(s.owner.name, training)
    result = (job.result if job else None) or next((o.result for o in orphans if o.result), None)
    result = result or stored_results(s).get(f"train-{training}")
    public = outcomes.public_condition(source, s.refusal)
    protected = s.refusal is not None and s.refusal.reason in _PROTECTED
    for name, other in s.jobs.items():
        version = _label(other, children.VERSION_LABEL)
        if _label(other, children.COMPONENT_LABEL) == "train" and version != training:
            view = train_views(s, version)[0]
            if view is not None and not view.suspended and view.phase in (JobPhase.PENDING, JobPhase.RUNNING):
                work.stop.append(name)
    begun = job is not None or bool(orphans) or result is not None
    if not begun:
        if s.refusal is not None:
            outcome = outcomes.public_refused(s.refusal)
        elif isinstance(s.start, InitProblem):
            outcome = outcomes.waiting_for_start(s.start.reason, s.start.message)
        elif _unisolated(s):  # no train pod before the API server holds its NetworkPolicy
            outcome = outcomes.training(job_name, "waiting for its NetworkPolicies", False, public, public=True)
        else:
            init = train_parts(s.start, s.spec.model.fine_tune) if s.start is not None else None
            work.public_train = children.train_job(s.owner, s.spec, training, None, s.image, init)
            outcome = outcomes.training(job_name, "", False, public, public=True)
    elif job is not None and job.phase is not JobPhase.SUCCEEDED and (job.suspended or protected):
        if not job.suspended and job.phase is not JobPhase.FAILED:
            work.stop.append(job.name)
        outcome = outcomes.public_stopped(job_name, s.refusal if protected else None)
    elif job is not None and job.phase in (JobPhase.PENDING, JobPhase.RUNNING):
        outcome = outcomes.training(job_name, job.message, job.ran, public, public=True)
    elif job is None and result is None:  # its Job was deleted: trained again once its pods are gone
        outcome = outcomes.training(job_name, "the pods of its deleted Job end first", False, public, public=True)
    elif (job is not None and job.phase is JobPhase.FAILED) or (result or {}).get("status") not in (None, "Succeeded"):
        error = (result or {}).get("error") or (job.message if job else "") or "the training pod failed"
        outcome = outcomes.training_failed(job_name, str(error), public)
    else:
        fields: dict[str, Any] = {**outcomes.public_privacy(source), "endpoint": children.endpoint(s.owner.name, s.owner.namespace)}
        if result:
            fields["model"] = {"digest": result.get("digest"), "sizeBytes": int(result.get("sizeBytes") or 0)}
        outcome = _compress_and_serve(s, work, (public, outcomes.public_trained_condition(result)), fields)
    if served is not None or begun or work.public_train is not None:
        outcome = _keys(s, work, outcome)
        work.apply += [obj for obj in (children.artifacts_pvc(s.owner, s.artifacts_storage),) if _drifted_pvc(obj, s.pvc)]
    if served is not None and s.versions.version != served.version:
        outcome = _serve(s, work, served, outcome, current=False)
    _record_results(s, work)
    return work.decision(outcomes.with_fields(outcome, (), {"version": s.versions.version}))


def _unisolated(s: Snapshot) -> list[dict[str, Any]]:
    """The train and compress pods' NetworkPolicy if the API server does not hold it as wanted (empty: they are
    isolated)."""
    return _unheld(s, network.isolated_policy(s.owner))


def _unheld(s: Snapshot, policy: dict[str, Any]) -> list[dict[str, Any]]:
    """``[policy]`` if the API server does not hold it as wanted, else empty."""
    return [policy] if drifted(policy, s.network_policies.get(policy["metadata"]["name"])) else []


def _released_jobs(s: Snapshot) -> list[str]:
    """Suspended train Jobs whose claim is now Released: the ledger is their record; they go."""
    assert s.ledger is not None
    names = []
    for name, job in s.jobs.items():
        if _label(job, children.COMPONENT_LABEL) != "train" or not (job.get("spec") or {}).get("suspend"):
            continue
        claim = s.ledger.claim(f"{s.owner.uid}/{_label(job, children.VERSION_LABEL)}")
        if claim is not None and claim.state is ClaimState.RELEASED:
            names.append(name)
    return names


def _drifted_pvc(desired: Mapping[str, Any], observed: Mapping[str, Any] | None) -> bool:
    # A PVC's size may only grow and its access modes never change: only a missing one is (re)created.
    return observed is None


def _settle_left(s: Snapshot, work: _Work) -> tuple[str, str] | None:
    """Settle the live claims of versions the spec left; (Job, version) of one still training, if any."""
    assert s.ledger is not None
    finishing = None
    for claim in s.ledger.claims_of(s.owner.uid):
        version = claim.consumer.version
        if version == s.versions.training or claim.state not in (ClaimState.WAITING, ClaimState.RESERVED):
            continue
        job, orphans = train_views(s, version)
        ending = _settle(s, claim, job, orphans, wanted=False)
        work.settle(claim, job, orphans, ending)
        if ending.act is Act.KEEP and claim.dispatched is not None:
            finishing = (children.train_job_name(s.owner.name, version), version)
    return finishing


def _claim_stage(s: Snapshot, work: _Work, claim: Claim | None, finishing: tuple[str, str] | None) -> Outcome | None:
    """The outcome while the spec's version has no granted claim yet (None once it has one)."""
    budget = s.privacy.budget_ref
    if claim is None:
        if s.refusal is not None:
            return outcomes.budget_refused(budget, s.refusal.reason, s.refusal.message)
        if s.calibration_error is not None or s.calibration is None:
            return outcomes.calibration_failed(budget, s.calibration_error or "not calibrated")
        if finishing is not None:
            return outcomes.finishing_left(*finishing)
        if isinstance(s.start, InitProblem):  # nothing is claimed for a training that cannot start
            return outcomes.waiting_for_start(s.start.reason, s.start.message)
        # Claimed in this pass (once kopf's finalizer is on, so deleting the model settles it): the
        # ledger's answer, Waiting or Reserved, is what the status shows next, not this moment.
        work.quiet = True
        if s.finalized:
            consumer, plan = s.consumer, s.plan
            assert plan is not None
            mechanism = DpSgd(s.calibration.noise_multiplier, plan.sample_rate, plan.steps)
            work.ledger.append(LedgerAction(Verb.SUBMIT, consumer.key, consumer, s.privacy.epsilon,
                                            s.privacy.delta, mechanism=mechanism))  # fmt: skip
        return outcomes.claiming(budget, s.versions.training)
    found = outcomes.claim_outcome(budget, claim)
    return None if found is None else outcomes.with_fields(found, (), _privacy_fields(s, claim))


def _privacy_fields(s: Snapshot, claim: Claim) -> dict[str, Any]:
    """``status.privacy``: the operator's calibration of the claim, and what was committed."""
    fields: dict[str, Any] = {"epsilonClaimed": claim.epsilon, "delta": claim.delta, "neighbouring": "add-remove",
                              "accountant": s.privacy.accountant}  # fmt: skip
    run = run_of(s, claim)
    if run is not None:
        fields |= {"noiseMultiplier": run.noise_multiplier, "sampleRate": run.sample_rate, "steps": run.steps}
    if claim.state is ClaimState.COMMITTED:
        fields["epsilonSpent"] = claim.epsilon
    return {"privacy": fields}


def _pipeline(s: Snapshot, work: _Work, claim: Claim) -> Outcome:
    """Train, settle, compress and serve the spec's version, whose claim is Reserved or Committed."""
    training = s.versions.training
    reserved = outcomes.reserved_condition(s.privacy.budget_ref, claim)
    privacy = _privacy_fields(s, claim)
    job, orphans = train_views(s, training)
    job_name = children.train_job_name(s.owner.name, training)
    if claim.state is ClaimState.RESERVED:
        ending = _settle(s, claim, job, orphans, wanted=True)
        if ending.act is Act.DISPATCH:
            if _unisolated(s):  # no train pod before the API server holds its NetworkPolicy
                return outcomes.with_fields(outcomes.training(job_name, "waiting for its NetworkPolicies", False,
                                                              reserved), (), privacy)  # fmt: skip
            if isinstance(s.start, InitProblem):  # the source went away since the claim: no pod until it is back
                return outcomes.with_fields(outcomes.training(job_name, f"waiting for the starting weights: "
                                                              f"{s.start.message}", False, reserved), (), privacy)  # fmt: skip
            run = run_of(s, claim)
            if run is None:
                return outcomes.calibration_failed(s.privacy.budget_ref, s.calibration_error or "not calibrated")
            init = train_parts(s.start, s.spec.model.fine_tune) if s.start is not None else None
            work.ledger.append(LedgerAction(Verb.DISPATCH, claim.consumer.key))
            work.train = (claim.consumer.key, functools.partial(children.train_job, s.owner, s.spec, training, run,
                                                                s.image, init))  # fmt: skip
            return outcomes.with_fields(outcomes.training(job_name, "", False, reserved), (), privacy)
        work.settle(claim, job, orphans, ending)
        if ending.act in (Act.STOP, Act.RELEASE):
            return outcomes.with_fields(outcomes.training_stopped(job_name, ending.why, reserved), (), privacy)
        if ending.act is Act.KEEP:
            message, ran = (job.message, job.ran) if job is not None else ("", False)
            return outcomes.with_fields(outcomes.training(job_name, message, ran, reserved), (), privacy)
        privacy["privacy"]["epsilonSpent"] = ending.epsilon
        reserved = Condition(reserved.type, True, ClaimState.COMMITTED,
                             f"ε={ending.epsilon:.6g} spent and committed to PrivacyBudget {s.privacy.budget_ref}")  # fmt: skip
    results = stored_results(s)
    train_result = (job.result if job else None) or next((o.result for o in orphans if o.result), None)
    train_result = train_result or results.get(f"train-{training}")
    failed = (job is not None and job.phase is JobPhase.FAILED) or (train_result or {}).get("status") not in (None, "Succeeded")
    if failed:
        error = (train_result or {}).get("error") or (job.message if job else "") or "the training pod failed"
        return outcomes.with_fields(outcomes.training_failed(job_name, str(error), reserved), (), privacy)
    if job is not None and job.phase is not JobPhase.SUCCEEDED:
        return outcomes.with_fields(outcomes.training(job_name, job.message, job.ran, reserved), (), privacy)
    spent = privacy["privacy"].get("epsilonSpent")
    conditions = (reserved, outcomes.trained_condition(train_result, spent))
    fields: dict[str, Any] = {**privacy, "endpoint": children.endpoint(s.owner.name, s.owner.namespace)}
    if train_result:
        fields["model"] = {"digest": train_result.get("digest"), "sizeBytes": int(train_result.get("sizeBytes") or 0)}
    return _compress_and_serve(s, work, conditions, fields)


def _compress_and_serve(s: Snapshot, work: _Work, conditions: tuple[Condition, ...], fields: dict[str, Any]) -> Outcome:
    versions = s.versions
    name = children.compress_job_name(s.owner.name, versions.version)
    job = compress_view(s, versions)
    result = (job.result if job else None) or stored_results(s).get(f"compress-{versions.version}")
    done = result is not None and result.get("status") == "Succeeded"
    gone = {"compressedSizeBytes": None, "accuracy": None, "compressedAccuracy": None, "sparsity": None}
    if not done:
        if job is None:
            if result is not None:  # it failed, and its Job was deleted since: not run again
                error = str(result.get("error") or "the compression failed")
                return outcomes.with_fields(outcomes.compression_failed(name, error), conditions, fields)
            source = s.round if isinstance(s.round, RoundModel) else None
            work.create.append(children.compress_job(s.owner, s.spec, versions, s.image, s.spec.evaluation, source))
            return outcomes.with_fields(outcomes.compressing(name), conditions, _model(fields, gone))
        if job.phase is JobPhase.FAILED or (result is not None and result.get("status") != "Succeeded"):
            error = str((result or {}).get("error") or job.message or "the compression pod failed")
            return outcomes.with_fields(outcomes.compression_failed(name, error), conditions, _model(fields, gone))
        return outcomes.with_fields(outcomes.compressing(name), conditions, _model(fields, gone))
    assert result is not None
    # Accuracy only as measured on the evaluation source the user declared public (absent without one).
    compressed = {"digest": result.get("digest"), "compressedSizeBytes": int(result.get("compressedSizeBytes") or 0),
                  "accuracy": result.get("accuracy"), "compressedAccuracy": result.get("compressedAccuracy"),
                  "sparsity": result.get("sparsity")}  # fmt: skip
    outcome = _serve(s, work, versions, None, current=True)
    return outcomes.with_fields(outcome, (*conditions, outcomes.compressed_condition(result)), _model(fields, compressed))


def _model(fields: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    return {**fields, "model": {**(fields.get("model") or {}), **extra}}


def _served_versions(s: Snapshot) -> Versions | None:
    """The versions the serving Deployment serves now, from its labels (None if there is none)."""
    if s.deployment is None:
        return None
    version = _label(s.deployment, children.VERSION_LABEL)
    training = _label(s.deployment, children.TRAINING_LABEL)
    return Versions(training, version) if version and training else None


def _available(deployment: Mapping[str, Any] | None) -> bool:
    return deployment is not None and int((deployment.get("status") or {}).get("availableReplicas") or 0) > 0


def _serve(s: Snapshot, work: _Work, versions: Versions, outcome: Outcome | None, *, current: bool) -> Outcome:
    """Apply the serving pods' NetworkPolicy, the Service and the Deployment of ``versions`` where they drifted;
    the serving outcome.

    The Deployment is applied only once the API server holds the serving pods' NetworkPolicy as wanted
    (written here, when the model first serves, not in its first pass: a model that never serves never
    has one), so no serving pod exists before its policy.

    ``current``: ``versions`` is the spec's. Otherwise the version served before keeps serving
    while the spec's is made, and ``outcome`` (the spec's version) stays the status, with Ready
    True while that version answers.
    """
    digest = _compressed_digest(s, versions)
    desired = children.deployment(s.owner, s.spec, versions, s.image, digest)
    exposed = _unheld(s, network.serving_policy(s.owner, s.metrics_namespace))
    work.apply += [policy for policy in exposed if policy not in work.apply]  # _serve may run twice in a pass
    service = children.service(s.owner)
    # Without the compress result's digest there is nothing the pods could check the artifact against:
    # the Deployment is left as it is (a version served before keeps serving).
    for obj, seen in ((service, s.service), *(((desired, s.deployment),) if digest and not exposed else ())):
        if drifted(obj, seen):
            work.apply.append(obj)
    failure = serve_failure(s, versions.version)
    if current:
        served = outcomes.serving(s.deployment if not drifted(desired, s.deployment) else None, s.spec.serving.replicas,
                                  failure, current=True)  # fmt: skip
        served_before = _served_versions(s)
        if served.ready.status:
            served = outcomes.with_fields(served, (), {"servingVersion": versions.version})
        elif served_before is not None and served_before.version != versions.version:
            served = outcomes.while_serving(served, served_before.version, _available(s.deployment))
        return served
    assert outcome is not None
    return outcomes.while_serving(
        outcomes.with_fields(outcome, (), {"servingVersion": versions.version}), versions.version,
        _available(s.deployment),
    )


def _compressed_digest(s: Snapshot, versions: Versions) -> str | None:
    """The digest of ``versions``' compressed artifact, as its compress pod reported it (None if unknown)."""
    job = compress_view(s, versions)
    result = (job.result if job else None) or stored_results(s).get(f"compress-{versions.version}") or {}
    digest = result.get("digest") if result.get("status") == "Succeeded" else None
    return str(digest) if digest else None


def serve_failure(s: Snapshot, version: str) -> tuple[str, str] | None:
    """Why serving pods of ``version`` crash, from the kubelet's statuses: (reason, message), or None.

    A pod that refused its artifact (the serve worker's termination message ``{reason: ArtifactRejected,
    message}``) gives that reason; any other crash ``ServingFailed``.
    """
    for pod in s.pods:
        if _label(pod, children.COMPONENT_LABEL) != "serve" or _label(pod, children.VERSION_LABEL) != version:
            continue
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            state = status.get("state") or {}
            terminated = state.get("terminated") or (status.get("lastState") or {}).get("terminated")
            waiting = state.get("waiting") or {}
            name = pod["metadata"]["name"]
            if terminated is not None and terminated.get("exitCode") not in (0, None):
                reason, detail = _termination(terminated)
                return reason, f"serving pod {name} exited {terminated.get('exitCode')}: {detail}"
            if waiting.get("reason") in ("ErrImageNeverPull", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError"):
                return SERVING_FAILED, f"serving pod {name}: {waiting['reason']}: {waiting.get('message', '')}".strip()
    return None


SERVING_FAILED = "ServingFailed"


def _termination(terminated: Mapping[str, Any]) -> tuple[str, str]:
    """(reason, detail) of a crashed container: the worker's JSON refusal, else its last line of message."""
    text = (terminated.get("message") or "").strip()
    try:
        refusal = json.loads(text)
    except ValueError:
        refusal = None
    if isinstance(refusal, dict) and refusal.get("reason") and refusal.get("message"):
        return str(refusal["reason"]), str(refusal["message"])
    lines = text.splitlines()
    return SERVING_FAILED, lines[-1] if lines else str(terminated.get("reason", ""))


def _keys(s: Snapshot, work: _Work, outcome: Outcome) -> Outcome:
    """The key Secrets to write (one writer: this reconciler), the client Secrets to delete, and the
    allow-list of the client certificates in force once they are written (applied where it drifted)."""
    writes: list[Write] = []
    try:
        writes = wanted_secrets(s.owner, s.spec, s.secrets, s.now, rotation=s.rotation)
    except UnreadableAuthority as error:
        outcome = outcomes.blocked(outcome, "CertificateAuthorityUnreadable", f"{error}: restore it, or delete it to "
                                   "start a new CA (every client then needs its new Secret)")  # fmt: skip
    work.secrets += writes
    work.delete_secrets += removed_clients(s.owner, s.spec, list(s.secrets.values()))
    listed = children.allow_list_config_map(s.owner, allow_list(s.owner, s.spec, s.secrets, writes, s.client_limits, s.now))
    if drifted(listed, s.allow_list):
        work.apply.append(listed)
    if s.client_limits.invalid and outcome.progress is not Progress.STALLED:
        why = "; ".join(f"client {name}: {error}" for name, error in sorted(s.client_limits.invalid.items()))
        outcome = outcomes.blocked(outcome, "InvalidClientLimits", f"spec.serving.clientLimits is not valid ({why}): "
                                   "the serving pods refuse these clients until it is fixed")  # fmt: skip
    return outcome


def _record_results(s: Snapshot, work: _Work) -> None:
    """Keep every worker result read from a pod in the results ConfigMap (for status only)."""
    stored = dict(((s.results or {}).get("data") or {}))
    found: dict[str, str] = {}
    for job in s.jobs.values():
        component = _label(job, children.COMPONENT_LABEL)
        version = _label(job, children.VERSION_LABEL)
        if component not in ("train", "compress") or not version:
            continue
        view = train_views(s, version)[0] if component == "train" else compress_view(s, Versions("", version))
        if view is not None and view.result is not None:
            found[f"{component}-{version}"] = json.dumps(dict(view.result), sort_keys=True)
    merged = {**stored, **found}
    if merged != stored or (found and s.results is None):
        work.apply.append(children.results_config_map(s.owner, merged))


def decide_deletion(s: Snapshot) -> Decision:
    """Settle every live claim of a model being deleted; ``settled`` once none is left.

    A Waiting or undispatched claim is released; a dispatched one is committed (whole) if a
    container of it ran or may still run, else it is released once its Job and pods are gone.
    The train Jobs are deleted, and their pods let go once they ended, so the model goes only
    when no pod of it can read the data any more and none is held for settlement
    (:attr:`~.jobs.PodView.keeps_owner`).
    """
    work = _Work()
    live = False
    for claim in s.ledger.claims_of(s.owner.uid) if s.ledger is not None else ():
        if claim.state not in (ClaimState.WAITING, ClaimState.RESERVED):
            continue
        live = True
        job, orphans = train_views(s, claim.consumer.version)
        ending = _settle(s, claim, job, orphans, wanted=False)
        work.settle(claim, job, orphans, ending)
    work.stop.clear()  # the Jobs are deleted instead
    work.delete_jobs += [name for name, job in s.jobs.items() if _label(job, children.COMPONENT_LABEL) == "train"]
    work.release_pods(s)
    views = [pod_view(p, "train", "TrainResult") for p in s.pods if _label(p, children.COMPONENT_LABEL) == "train"]
    return work.decision(None, settled=not live and not any(v.keeps_owner for v in views))
