"""What a FederatedRound needs now, decided from a snapshot of what exists (pure: no API calls).

:func:`decide` maps a :class:`Snapshot` (the typed spec, each silo's budget and ledger, the
operator's calibration per silo, and the children as the watches last saw them) to a
:class:`Decision`. Nothing is read from the round's status.

Order of work:

1. **Checks, before any claim.** The starting model resolves (a SecureModel with a built-in
   architecture, or a previous round that succeeded); every silo's source is one the round can
   start from; every silo's budget exists, *consents* (``spec.consumers`` names kind FederatedRound
   and the round's namespace, or the budget is in the round's namespace) and *covers* the silo's
   source (``spec.data.sources``); ``spec.evaluation``, if set, is kept apart from every silo's
   source (:func:`securemodel.data.sources.check_evaluation`), since its accuracy is published
   unaccounted. A silo that fails a check gets its reason in
   ``status.participants`` and the ``Consented`` condition; no claim is made for it and no pod is
   created in its namespace (nor anywhere: the round waits).
2. **One claim per silo** on the silo's own budget, keyed ``<round uid>/<silo>``: DP-SGD at the σ the
   operator calibrated for the silo's R · s steps at q (:mod:`.calibration`), once kopf's finalizer
   is on the round (so deleting the round settles it).
3. **Once every claim is Reserved:** the key Secrets (:mod:`.keys`), then the round's PVC, the
   SuperLink Service and the aggregator Job; then each silo's claim is marked *dispatched* in its
   ledger, and only then its SuperNode Job is created (act checks the fresh ledger first).
4. **Settlement** with SecureModel's rule (:func:`securemodel.operator.secure_model.settlement.settle`):
   a silo's claim is committed (whole) once a container of its SuperNode ran, and released only when
   none ever did. Once the aggregator has ended, the silos' Jobs are deleted (their pods get SIGTERM and
   report the steps they ran) and every claim settles.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from securemodel.data.builtin import BUILTIN_BOUNDS
from securemodel.data.sources import BuiltinSource, SourceError, check_evaluation, parse_source
from securemodel.operator.budget.ledger import BudgetRef
from securemodel.operator.conditions import Outcome
from securemodel.operator.federated import children, outcomes
from securemodel.operator.federated.children import Start
from securemodel.operator.federated.keys import wanted_secrets
from securemodel.operator.federated.snapshot import KIND, Silo, Snapshot, StartProblem
from securemodel.operator.federated.spec import SiloSpec
from securemodel.operator.secure_model import network
from securemodel.operator.federated.views import AGGREGATOR_RESULT, aggregator_view, final_result, supernode_views
from securemodel.operator.kube import drifted
from securemodel.operator.secure_model.children import Run
from securemodel.operator.secure_model.decide import LedgerAction, Verb
from securemodel.operator.secure_model.jobs import parse_result, pod_view
from securemodel.operator.secure_model.keys import UnreadableAuthority, Write
from securemodel.operator.secure_model.settlement import Act, settle
from securemodel.privacy import Claim, ClaimState, DpSgd
from securemodel.privacy.coverage import consents, covers
from securemodel.workers.federated.contract import SILO_REPORT_KIND


@dataclass(frozen=True)
class Decision:
    ledger: tuple[tuple[BudgetRef, LedgerAction], ...] = ()
    supernodes: tuple[tuple[str, dict[str, Any]], ...] = ()  # (claim key, Job): created once the claim is dispatched
    apply: tuple[dict[str, Any], ...] = ()  # server-side applied
    create: tuple[dict[str, Any], ...] = ()  # created if absent (the aggregator Job)
    secrets: tuple[Write, ...] = ()
    stop: tuple[tuple[str, str], ...] = ()  # SuperNode Jobs (namespace, name) to suspend: none of their containers ran
    delete_jobs: tuple[tuple[str, str], ...] = ()
    delete_secrets: tuple[tuple[str, str], ...] = ()
    delete_policies: tuple[tuple[str, str], ...] = ()  # the silos' NetworkPolicies (no ownerReference reaches them)
    unhold: tuple[tuple[str, str, BudgetRef, str, bool], ...] = ()  # (namespace, pod, budget, claim key, ran)
    outcome: Outcome | None = None
    settled: bool = True  # on deletion: no live claim and no SuperNode pod is left


@dataclass
class _Work:
    """The decision being built (a private accumulator: decide stays a function of the snapshot)."""

    ledger: list[tuple[BudgetRef, LedgerAction]] = field(default_factory=list)
    supernodes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    apply: list[dict[str, Any]] = field(default_factory=list)
    create: list[dict[str, Any]] = field(default_factory=list)
    secrets: list[Write] = field(default_factory=list)
    stop: list[tuple[str, str]] = field(default_factory=list)
    delete_jobs: list[tuple[str, str]] = field(default_factory=list)
    delete_secrets: list[tuple[str, str]] = field(default_factory=list)
    delete_policies: list[tuple[str, str]] = field(default_factory=list)
    unhold: list[tuple[str, str, BudgetRef, str, bool]] = field(default_factory=list)

    def decision(self, outcome: Outcome | None, *, settled: bool = True) -> Decision:
        return Decision(tuple(self.ledger), tuple(self.supernodes), tuple(self.apply), tuple(self.create),
                        tuple(self.secrets), tuple(self.stop), tuple(self.delete_jobs), tuple(self.delete_secrets),
                        tuple(self.delete_policies), tuple(self.unhold), outcome, settled)  # fmt: skip


# --- checks before any claim ---------------------------------------------------------------------


def source_problem(silo: SiloSpec, fresh: bool) -> str | None:
    """Why the round cannot train on ``silo``'s source (None if it can)."""
    try:
        source = parse_source(silo.source)
    except SourceError as error:
        return str(error)
    if not isinstance(source, BuiltinSource):
        return (f"{silo.source}: a FederatedRound takes built-in sources only for now (a pvc:// table needs "
                "spec.data.schema, which the silos' spec does not carry yet)")  # fmt: skip
    if fresh and source.name not in BUILTIN_BOUNDS:
        return f"{silo.source}: fresh weights need a dataset with published bounds ({', '.join(sorted(BUILTIN_BOUNDS))})"
    return None


def refusal(s: Snapshot, silo: Silo) -> tuple[str, str] | None:
    """(reason, message) why ``silo`` may not take part; None if it may."""
    spec = silo.spec
    if silo.budget is None:
        return outcomes.BUDGET_NOT_FOUND, f"PrivacyBudget {spec.budget_ref} does not exist in namespace {spec.namespace}"
    if not consents(silo.budget.consumers, KIND, s.owner.namespace, spec.namespace):
        return outcomes.NOT_CONSENTED, (
            f"PrivacyBudget {spec.namespace}/{spec.budget_ref} does not consent to be spent by a {KIND} of namespace "
            f"{s.owner.namespace}: its spec.consumers must name {{kind: {KIND}, namespace: {s.owner.namespace}}}"
        )
    if not covers(silo.budget.sources, spec.source):
        covered = ", ".join(silo.budget.sources) or "nothing"
        return outcomes.NOT_COVERED, (
            f"PrivacyBudget {spec.namespace}/{spec.budget_ref} protects {covered}, not {spec.source}: a budget is "
            "charged only for the data its spec.data.sources declares"
        )
    problem = source_problem(spec, fresh=isinstance(s.start, Start) and s.start.previous_round is None)
    if problem is not None:
        return outcomes.UNSUPPORTED_SOURCE, problem
    if s.spec.evaluation is not None:
        try:
            check_evaluation(spec.source, s.spec.evaluation)
        except SourceError as error:
            return outcomes.EVALUATION_REFUSED, f"spec.evaluation: {error}"
    if silo.error is not None:
        return outcomes.CALIBRATION_FAILED, f"no ε claimed for silo {spec.name}: {silo.error}"
    return None


# --- the decision --------------------------------------------------------------------------------


def run_of(silo: Silo, claim: Claim) -> Run | None:
    """σ, q and steps of ``claim``: the DP-SGD mechanism recorded in the silo's ledger when it was claimed."""
    if isinstance(claim.mechanism, DpSgd):
        return Run(claim.mechanism.noise_multiplier, claim.mechanism.sample_rate, claim.mechanism.steps)
    return None


def _settle(s: Snapshot, work: _Work, silo: Silo, claim: Claim, *, wanted: bool) -> Act:
    """Apply the settlement rule to ``claim``; the act it chose. The whole claim is committed once a container
    ran: a silo's pod reports the steps it ran, but what is charged is never lowered on a pod's word here."""
    job, orphans = supernode_views(silo)
    run = run_of(silo, claim)
    ending = settle(claim, job, orphans, wanted=wanted, deleting=s.deleting, own_code=False,
                    planned_steps=run.steps if run else None, credit=None)  # fmt: skip
    key, ref = claim.consumer.key, silo.ref
    ran = any(p.ran for p in (*(job.pods if job else ()), *orphans))
    if ran and claim.started is None and claim.state is ClaimState.RESERVED:
        work.ledger.append((ref, LedgerAction(Verb.START, key)))
    if ending.act is Act.COMMIT:
        work.ledger.append((ref, LedgerAction(Verb.COMMIT, key, epsilon=ending.epsilon)))
    elif ending.act is Act.RELEASE:
        gone = children.supernode_job_name(s.owner.name, silo.spec.name) if claim.dispatched else None
        work.ledger.append((ref, LedgerAction(Verb.RELEASE, key, gone=gone, version=silo.spec.name)))
    elif ending.act is Act.STOP and job is not None and not job.suspended:
        work.stop.append((silo.spec.namespace, job.name))
    return ending.act


def _release_pods(s: Snapshot, work: _Work) -> None:
    """Let go of SuperNode pods that can run no more; one that ran only once its claim records it (act checks)."""
    for silo in s.silos:
        key = s.consumer(silo.spec).key
        for pod in silo.pods:
            view = pod_view(pod, children.SUPERNODE, SILO_REPORT_KIND)
            if view.held and view.settled:
                work.unhold.append((silo.spec.namespace, view.name, silo.ref, key, view.ran))


def _record_results(s: Snapshot, work: _Work) -> None:
    """Keep every worker result read from a pod in the results ConfigMap (for status and ``fromRound`` only)."""
    stored = dict((s.results or {}).get("data") or {})
    found: dict[str, str] = {}
    view = aggregator_view(s)
    if view is not None and view.result is not None:
        found[AGGREGATOR_RESULT] = json.dumps(dict(view.result), sort_keys=True)
    for silo in s.silos:
        for pod in silo.pods:
            terminated = [(c.get("state") or {}).get("terminated") for c in (pod.get("status") or {}).get("containerStatuses") or []]
            report = next((parse_result(t.get("message"), SILO_REPORT_KIND) for t in terminated if t), None)
            if report is not None:
                found[f"silo-{silo.spec.name}"] = json.dumps(report, sort_keys=True)
    merged = {**stored, **found}
    if merged != stored:
        work.apply.append(children.results_config_map(s.owner, merged))


def decide(s: Snapshot) -> Decision:
    """The decision for a round that is not being deleted (see the module docstring)."""
    if s.deleting:
        return decide_deletion(s)
    work = _Work()
    _record_results(s, work)
    result = final_result(s)
    claims = {silo.spec.name: s.claim(silo) for silo in s.silos}
    outcome = _ended(s, work, claims, result) if result is not None else _before_end(s, work, claims)
    _release_pods(s, work)
    return work.decision(outcome)


def _ended(s: Snapshot, work: _Work, claims: Mapping[str, Claim | None], result: Mapping[str, Any]) -> Outcome:
    """The aggregator ended: stop the silos, settle every claim, report the result."""
    live = _settle_all(s, work, claims)
    pods_left = any(silo.pods for silo in s.silos)
    return outcomes.ended(s, claims, result, settling=live or pods_left)


def _settle_all(s: Snapshot, work: _Work, claims: Mapping[str, Claim | None]) -> bool:
    """Settle every live claim as no longer wanted and delete the SuperNode Jobs; whether a claim is still live."""
    live = False
    for silo in s.silos:
        claim = claims[silo.spec.name]
        if claim is not None and claim.state in (ClaimState.WAITING, ClaimState.RESERVED):
            live = True
            _settle(s, work, silo, claim, wanted=False)
        if silo.job is not None:
            work.delete_jobs.append((silo.spec.namespace, silo.job["metadata"]["name"]))
    work.stop.clear()  # the Jobs are deleted instead
    return live


def _before_end(s: Snapshot, work: _Work, claims: Mapping[str, Claim | None]) -> Outcome:
    refused = {silo.spec.name: refusal(s, silo) for silo in s.silos}
    doomed = _doomed(s, claims)
    if doomed is not None:  # a claim was refused for good: the round cannot run; give back what was held
        live = _settle_all(s, work, claims)
        return outcomes.failed_before_start(s, claims, refused, *doomed, settling=live or any(x.pods for x in s.silos))
    if isinstance(s.start, StartProblem) and s.aggregator is None:
        return outcomes.not_started(s, claims, refused, s.start.reason, s.start.message, stalled=s.start.stalled)
    blocked = {name: why for name, why in refused.items() if why is not None and claims[name] is None}
    for silo in s.silos:
        claim = claims[silo.spec.name]
        if claim is None and not blocked and s.finalized:
            assert silo.plan is not None and silo.calibration is not None
            plan = silo.plan.plan
            consumer = s.consumer(silo.spec)
            mechanism = DpSgd(silo.calibration.noise_multiplier, plan.sample_rate, plan.steps)
            work.ledger.append((silo.ref, LedgerAction(Verb.SUBMIT, consumer.key, consumer, s.spec.epsilon, s.spec.delta,
                                                       mechanism=mechanism)))  # fmt: skip
    if blocked or any(c is None for c in claims.values()):
        return outcomes.pending(s, claims, refused)
    if any(c is not None and c.state is ClaimState.WAITING for c in claims.values()):
        return outcomes.pending(s, claims, refused)
    return _running(s, work, claims, s.start if isinstance(s.start, Start) else None)


def _doomed(s: Snapshot, claims: Mapping[str, Claim | None]) -> tuple[str, str] | None:
    """(reason, message) when a claim of the round was refused or given back before the round ran."""
    for name, claim in claims.items():
        if claim is None:
            continue
        if claim.state is ClaimState.REJECTED:
            why = claim.reason or ClaimState.REJECTED
            return str(why), f"the budget of silo {name} rejected its claim of ε={claim.epsilon:g}, δ={claim.delta:g}"
        if claim.state is ClaimState.RELEASED:
            return "ClaimReleased", f"the claim of silo {name} was given back (no container of its SuperNode ran)"
    return None


def _running(s: Snapshot, work: _Work, claims: Mapping[str, Claim | None], start: Start | None) -> Outcome:
    """Every claim is Reserved (or settled after a dropout): keys, aggregator, SuperNodes. ``start`` is None only
    once the aggregator exists (what it started from no longer matters)."""
    try:
        work.secrets += wanted_secrets(s.owner, s.spec, s.secrets, s.now)
    except UnreadableAuthority as error:
        return outcomes.blocked(s, claims, "CertificateAuthorityUnreadable",
                                f"{error}: restore it, or delete it and the round's other key Secrets")  # fmt: skip
    keys_ready = not work.secrets
    if s.aggregator is None:  # the pods' connections are closed before the first pod of the round exists
        work.apply += network.round_policies(s.owner, s.spec)
    if s.pvc is None:
        work.apply.append(children.artifacts_pvc(s.owner, s.artifacts_storage))
    service = children.service(s.owner)
    if drifted(service, s.service):
        work.apply.append(service)
    if keys_ready and s.aggregator is None and start is not None:
        largest = max((silo.plan.examples for silo in s.silos if silo.plan is not None), default=1)
        work.create.append(children.aggregator_job(s.owner, s.spec, start, largest, s.image))
    for silo in s.silos:
        claim = claims[silo.spec.name]
        assert claim is not None
        if claim.state is not ClaimState.RESERVED:
            continue
        act = _settle(s, work, silo, claim, wanted=True)
        run = run_of(silo, claim)
        if act is Act.DISPATCH and keys_ready and s.aggregator is not None and run is not None and silo.plan is not None:
            work.ledger.append((silo.ref, LedgerAction(Verb.DISPATCH, claim.consumer.key)))
            per_round = run.steps // s.spec.rounds
            job = children.supernode_job(s.owner, s.spec, silo.spec, run, per_round, s.image)
            work.supernodes.append((claim.consumer.key, job))
    return outcomes.running(s, claims, keys_ready and s.aggregator is not None)


def decide_deletion(s: Snapshot) -> Decision:
    """Settle every live claim of a round being deleted; ``settled`` once none is left and no SuperNode pod is.

    The SuperNode Jobs and the aggregator Job are deleted and the silos' Secrets removed (an
    ownerReference cannot reach into the silos' namespaces); a claim whose SuperNode ran is
    committed whole, one whose SuperNode never ran is released once its Job and pods are gone; it is
    settled once no SuperNode pod :attr:`~securemodel.operator.secure_model.jobs.PodView.keeps_owner`.
    """
    work = _Work()
    claims = {silo.spec.name: s.claim(silo) for silo in s.silos}
    live = _settle_all(s, work, claims)
    if s.aggregator is not None:
        work.delete_jobs.append((s.owner.namespace, s.aggregator["metadata"]["name"]))
    for silo in s.silos:
        name = children.supernode_secret_name(s.owner.name, silo.spec.name)
        if (silo.spec.namespace, name) in s.secrets:
            work.delete_secrets.append((silo.spec.namespace, name))
        work.delete_policies.append((silo.spec.namespace, network.supernode_policy_name(s.owner.name, silo.spec.name)))
    _release_pods(s, work)
    views = (pod_view(pod, children.SUPERNODE, SILO_REPORT_KIND) for silo in s.silos for pod in silo.pods)
    return work.decision(None, settled=not live and not any(v.keeps_owner for v in views))


