"""A FederatedRound's decision for every lifecycle state, from snapshots built by hand (pure)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from securemodel.crypto.pki import CA_CERT
from securemodel.operator.budget.ledger import BudgetRef
from securemodel.operator.conditions import Progress
from securemodel.operator.federated import children, keys
from securemodel.operator.federated.calibration import silo_plan
from securemodel.operator.federated.children import Start
from securemodel.operator.federated.decide import Decision, decide, decide_deletion
from securemodel.operator.federated.snapshot import BudgetView, Silo, Snapshot, StartProblem
from securemodel.operator.federated.spec import parse
from securemodel.operator.secure_model.children import SETTLEMENT_FINALIZER, Owner
from securemodel.operator.secure_model.decide import Verb
from securemodel.privacy import Calibration, Claim, ClaimState, Consumer, DpSgd, Ledger, dp_sgd_epsilon

NOW = datetime(2026, 11, 26, tzinfo=UTC)
OWNER = Owner("r1", "research", "uid-r")
RAW: dict[str, Any] = {
    "model": {"secureModelRef": "tumor"},
    "clients": [
        {"name": f"clinic-{x}", "namespace": f"clinic-{x}", "data": {"source": f"builtin://breast_cancer?shard={i}&of=3"},
         "budgetRef": "bc"}
        for i, x in enumerate("abc")
    ],
    "rounds": 3,
    "minClients": 2,
    "privacy": {"epsilon": 1.0},
    "secureAggregation": {"threshold": 2},
}
SPEC = parse(RAW, "research")
START = Start(architecture="mlp", params="{}", source=SPEC.silos[0].source)
CONSENT = BudgetView(("builtin://breast_cancer",), ({"kind": "FederatedRound", "namespace": "research"},))
SIGMA = 2.5
PUBLIC = "builtin://breast_cancer?part=evaluation"


def consumer(silo: str) -> Consumer:
    return Consumer("FederatedRound", "research", "r1", "uid-r", silo)


def claim(silo: str, state: ClaimState, **marks: Any) -> Claim:
    plan = silo_plan(SPEC, next(s for s in SPEC.silos if s.name == silo)).plan
    return Claim(consumer(silo), 1.0, 1e-5, state, "t0", mechanism=DpSgd(SIGMA, plan.sample_rate, plan.steps), **marks)


def silo(name: str, *, budget: BudgetView | None = CONSENT, claim_of: Claim | None = None, job: Any = None,
         pods: tuple[Any, ...] = ()) -> Silo:  # fmt: skip
    spec = next(s for s in SPEC.silos if s.name == name)
    plan = silo_plan(SPEC, spec)
    calibration = Calibration(SIGMA, plan.plan.sample_rate, plan.plan.steps, 0.99, 1e-5, "prv")
    ledger = Ledger((claim_of,) if claim_of is not None else ())
    return Silo(spec, budget, ledger if budget is not None else None, plan, calibration, None, job, pods)


def snapshot(*silos: Silo, **changes: Any) -> Snapshot:
    base = Snapshot(owner=OWNER, generation=1, deleting=False, finalized=True, spec=SPEC, start=START,
                    silos=silos or tuple(silo(s.name) for s in SPEC.silos), aggregator=None, aggregator_pods=(),
                    service=None, pvc=None, results=None, secrets={}, image="securemodel-worker:dev", now=NOW)  # fmt: skip
    return replace(base, **changes)


def stored_keys(s: Snapshot) -> dict[tuple[str, str], Any]:
    """The Secrets the decision writes, as the index would show them."""
    out = {}
    for write in keys.wanted_secrets(s.owner, s.spec, {}, NOW):
        meta = write.body["metadata"]
        out[(meta["namespace"], meta["name"])] = {**write.body, "metadata": {**meta, "resourceVersion": "1"}}
    return out


def job(namespace: str, name: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"}, "spec": {}, "status": status}


def pod(j: dict[str, Any], *, ran: bool, phase: str = "Running", message: str | None = None,
        container: str = children.SUPERNODE, silo_name: str = "", deleting: bool = False) -> dict[str, Any]:  # fmt: skip
    state: dict[str, Any] = {"running": {}} if ran and phase == "Running" else {}
    if phase in ("Succeeded", "Failed"):
        state = {"terminated": {"exitCode": 0 if phase == "Succeeded" else 1, "message": message or ""}}
    status = {"name": container, "state": state or {"waiting": {"reason": "ContainerCreating"}}}
    if ran:
        status["containerID"] = "c://1"
    labels = {children.ROUND_UID_LABEL: "uid-r", children.SILO_LABEL: silo_name, "securemodel.io/component": container}
    meta: dict[str, Any] = {"name": f"{j['metadata']['name']}-p", "namespace": j["metadata"]["namespace"], "labels": labels,
                            "finalizers": [SETTLEMENT_FINALIZER] if container == children.SUPERNODE else [],
                            "ownerReferences": [{"uid": j["metadata"]["uid"], "controller": True}]}  # fmt: skip
    if deleting:
        meta["deletionTimestamp"] = "t"
    return {"metadata": meta, "spec": {"nodeName": "n"}, "status": {"phase": phase, "containerStatuses": [status]}}


def verbs(decision: Decision) -> list[tuple[str, str, Verb]]:
    return [(ref.namespace, action.key, action.verb) for ref, action in decision.ledger]


def running_snapshot(**per_silo: dict[str, Any]) -> Snapshot:
    """Every claim Reserved and dispatched, keys and aggregator in place, SuperNode Jobs as given."""
    silos = []
    for spec in SPEC.silos:
        extra = per_silo.get(spec.name.replace("-", "_"), {})
        marks = extra.pop("marks", {"dispatched": "t1"})
        silos.append(silo(spec.name, claim_of=claim(spec.name, ClaimState.RESERVED, **marks), **extra))
    base = snapshot(*silos)
    return replace(base, secrets=stored_keys(base), aggregator=job("research", "r1-aggregator"),
                   pvc={"metadata": {}}, service=children.service(OWNER))  # fmt: skip


def ready(outcome: Any) -> tuple[str, bool, str]:
    return outcome.phase, outcome.ready.status, outcome.ready.reason


# --- consent and coverage --------------------------------------------------------------------------


def test_a_budget_that_does_not_consent_gets_a_condition_and_no_claim_nor_pod() -> None:
    refusing = BudgetView(("builtin://breast_cancer",), ({"kind": "FederatedRound", "namespace": "elsewhere"},))
    s = snapshot(silo("clinic-a"), silo("clinic-b", budget=refusing), silo("clinic-c"))
    d = decide(s)
    assert d.ledger == () and d.supernodes == () and d.create == () and d.secrets == ()
    assert ready(d.outcome) == ("Pending", False, "BudgetNotConsented")
    assert d.outcome.progress is Progress.STALLED
    consented = next(c for c in d.outcome.conditions if c.type == "Consented")
    assert not consented.status and "clinic-b" in consented.message and "research" in consented.message
    entry = next(p for p in d.outcome.fields["participants"] if p["name"] == "clinic-b")
    assert entry["reason"] == "BudgetNotConsented" and entry["state"] == "Pending"


def test_a_secure_model_consumer_entry_does_not_consent_for_a_round() -> None:
    other_kind = BudgetView(("builtin://breast_cancer",), ({"kind": "SecureModel", "namespace": "research"},))
    d = decide(snapshot(silo("clinic-a", budget=other_kind), silo("clinic-b"), silo("clinic-c")))
    assert ready(d.outcome)[2] == "BudgetNotConsented" and d.ledger == ()


def test_a_budget_in_the_rounds_namespace_consents_without_consumers() -> None:
    raw = {**RAW, "clients": [{**c, "namespace": "research"} for c in RAW["clients"]]}
    spec = parse(raw, "research")
    silos = tuple(Silo(x, BudgetView(("builtin://breast_cancer",)), Ledger(), silo_plan(spec, x),
                       Calibration(SIGMA, 0.2, 15, 0.9, 1e-5, "prv")) for x in spec.silos)  # fmt: skip
    d = decide(snapshot(*silos, spec=spec))
    assert [v for _, _, v in verbs(d)] == [Verb.SUBMIT] * 3


def test_a_budget_that_does_not_cover_the_silos_data_is_refused() -> None:
    narrow = BudgetView(("builtin://breast_cancer?shard=0&of=3",), CONSENT.consumers)
    d = decide(snapshot(silo("clinic-a", budget=narrow), silo("clinic-b", budget=narrow), silo("clinic-c")))
    assert ready(d.outcome)[2] == "DataNotCovered" and d.ledger == ()  # clinic-a's shard is covered, clinic-b's not
    entries = {p["name"]: p for p in d.outcome.fields["participants"]}
    assert "reason" not in entries["clinic-a"] and entries["clinic-b"]["reason"] == "DataNotCovered"


def test_a_missing_budget_stalls_the_round() -> None:
    d = decide(snapshot(silo("clinic-a", budget=None), silo("clinic-b"), silo("clinic-c")))
    assert ready(d.outcome) == ("Pending", False, "BudgetNotFound") and d.ledger == ()


def test_a_starting_model_that_cannot_be_used_claims_nothing() -> None:
    d = decide(snapshot(start=StartProblem("UnsupportedModel", "custom image")))
    assert ready(d.outcome) == ("Pending", False, "UnsupportedModel") and d.ledger == ()


def test_pvc_sources_are_refused_before_any_claim() -> None:
    raw = {**RAW, "clients": [{**c, "data": {"source": "pvc://data/x.csv", "samples": 300}} for c in RAW["clients"]]}
    spec = parse(raw, "research")
    pvc = BudgetView(("pvc://data/",), CONSENT.consumers)
    silos = tuple(Silo(x, pvc, Ledger(), silo_plan(spec, x), Calibration(SIGMA, 0.2, 15, 0.9, 1e-5, "prv"))
                  for x in spec.silos)  # fmt: skip
    d = decide(snapshot(*silos, spec=spec))
    assert ready(d.outcome)[2] == "UnsupportedDataSource" and d.ledger == ()


# --- claims before SuperNodes ------------------------------------------------------------------------


def test_every_silo_claims_its_calibrated_mechanism_from_its_own_budget() -> None:
    d = decide(snapshot())
    assert verbs(d) == [(f"clinic-{x}", f"uid-r/clinic-{x}", Verb.SUBMIT) for x in "abc"]
    for ref, action in d.ledger:
        assert ref == BudgetRef(ref.namespace, "bc")
        plan = silo_plan(SPEC, next(s for s in SPEC.silos if s.namespace == ref.namespace))
        assert action.mechanism == DpSgd(SIGMA, plan.plan.sample_rate, SPEC.rounds * plan.steps_per_round)
        assert action.epsilon == 1.0 and action.delta == 1e-5
    assert d.supernodes == () and d.create == () and d.secrets == ()  # nothing runs before the claims are granted
    assert ready(d.outcome) == ("Pending", False, "Claiming")


def test_no_claim_before_kopfs_finalizer_is_on() -> None:
    assert decide(snapshot(finalized=False)).ledger == ()


def test_waiting_claims_keep_the_round_pending_without_pods() -> None:
    silos = (silo("clinic-a", claim_of=claim("clinic-a", ClaimState.RESERVED)),
             silo("clinic-b", claim_of=claim("clinic-b", ClaimState.WAITING)),
             silo("clinic-c", claim_of=claim("clinic-c", ClaimState.RESERVED)))  # fmt: skip
    d = decide(snapshot(*silos))
    assert d.ledger == () and d.supernodes == () and d.create == () and d.secrets == ()
    assert ready(d.outcome) == ("Pending", False, "WaitingForBudget")


def test_granted_claims_write_the_keys_first_then_the_aggregator_then_dispatch() -> None:
    silos = tuple(silo(s.name, claim_of=claim(s.name, ClaimState.RESERVED)) for s in SPEC.silos)
    first = decide(snapshot(*silos))
    assert first.secrets and first.create == () and first.supernodes == () and first.ledger == ()
    assert ready(first.outcome) == ("Running", False, "Running")
    with_keys = snapshot(*silos, secrets=stored_keys(snapshot(*silos)))
    second = decide(with_keys)
    assert second.secrets == () and [j["metadata"]["name"] for j in second.create] == ["r1-aggregator"]
    # The round's NetworkPolicies go with the aggregator (act creates no Job if one cannot be written).
    policies = [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in second.apply if p["kind"] == "NetworkPolicy"]
    assert policies == [("research", "r1-aggregator"), *((f"clinic-{x}", f"r1-clinic-{x}") for x in "abc")]
    assert second.supernodes == ()  # the SuperNodes only once the aggregator exists
    third = decide(replace(with_keys, aggregator=job("research", "r1-aggregator")))
    assert verbs(third) == [(f"clinic-{x}", f"uid-r/clinic-{x}", Verb.DISPATCH) for x in "abc"]
    keys_ = [key for key, _ in third.supernodes]
    assert keys_ == [action.key for _, action in third.ledger]  # each Job goes with its claim's dispatch
    for key, j in third.supernodes:
        name = key.split("/")[1]
        assert j["metadata"]["namespace"] == name and j["metadata"]["name"] == f"r1-{name}"
        args = j["spec"]["template"]["spec"]["containers"][0]["command"]
        assert args[args.index("--noise-multiplier") + 1] == repr(SIGMA)
        assert int(args[args.index("--steps-per-round") + 1]) * 3 == claim(name, ClaimState.RESERVED).mechanism.steps


def test_a_dispatched_silo_whose_job_vanished_before_running_is_dispatched_again() -> None:
    d = decide(running_snapshot())
    assert {v for _, _, v in verbs(d)} == {Verb.DISPATCH} and len(d.supernodes) == 3


# --- running, dropouts and the end -------------------------------------------------------------------


def _jobs_running(ran: bool = True) -> dict[str, dict[str, Any]]:
    out = {}
    for x in "abc":
        j = job(f"clinic-{x}", f"r1-clinic-{x}")
        out[f"clinic_{x}"] = {"job": j, "pods": (pod(j, ran=ran, silo_name=f"clinic-{x}"),)}
    return out


def test_a_silo_whose_container_ran_is_marked_started_and_nothing_else_changes() -> None:
    d = decide(running_snapshot(**_jobs_running()))
    assert {v for _, _, v in verbs(d)} == {Verb.START} and d.supernodes == () and d.delete_jobs == ()
    assert ready(d.outcome) == ("Running", False, "Running")
    assert {p["state"] for p in d.outcome.fields["participants"]} == {"Training"}


def test_a_dropped_silo_is_committed_whole_while_the_round_goes_on() -> None:
    per = _jobs_running()
    dead = job("clinic-c", "r1-clinic-c", failed=1)
    per["clinic_c"] = {"job": dead, "pods": (pod(dead, ran=True, phase="Failed", silo_name="clinic-c"),),
                       "marks": {"dispatched": "t1", "started": "t2"}}  # fmt: skip
    d = decide(running_snapshot(**per))
    assert ("clinic-c", "uid-r/clinic-c", Verb.COMMIT) in verbs(d)
    commit = next(a for _, a in d.ledger if a.verb is Verb.COMMIT)
    assert commit.epsilon == 1.0 and commit.mechanism is None  # the whole claim: σ, q and steps as claimed
    entry = next(p for p in d.outcome.fields["participants"] if p["name"] == "clinic-c")
    assert entry["state"] == "Dropped" and d.outcome.phase == "Running"


def test_an_image_that_cannot_be_pulled_stops_the_silo_and_releases_its_claim_once_gone() -> None:
    per = _jobs_running()
    j = job("clinic-a", "r1-clinic-a")
    stuck = pod(j, ran=False, silo_name="clinic-a")
    stuck["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "ErrImagePull", "message": "nope"}}
    per["clinic_a"] = {"job": j, "pods": (stuck,)}
    d = decide(running_snapshot(**per))
    assert ("clinic-a", "r1-clinic-a") in d.stop and ("clinic-a", "uid-r/clinic-a", Verb.RELEASE) not in verbs(d)
    gone = running_snapshot(clinic_a={"job": {**j, "spec": {"suspend": True}}, "pods": ()})
    release = [a for _, a in decide(gone).ledger if a.verb is Verb.RELEASE]
    assert [(a.key, a.gone, a.version) for a in release] == [("uid-r/clinic-a", "r1-clinic-a", "clinic-a")]


def _result(status: str, **extra: Any) -> dict[str, Any]:
    history = [{"round": r, "submitted": ["clinic-a", "clinic-b"], "dropped": ["clinic-c"], "accuracy": 0.9,
                "digest": f"sha256:{r}"} for r in (1, 2, 3)]  # fmt: skip
    return {"kind": "FederatedResult", "status": status, "roundsCompleted": 3, "rounds": 3, "accuracy": 0.93,
            "digest": "sha256:3", "artifact": "/artifacts/round-003.model", "history": history, **extra}  # fmt: skip


def _finished(result: dict[str, Any], phase: str = "Succeeded") -> Snapshot:
    per = _jobs_running()
    for x in "abc":
        per[f"clinic_{x}"]["marks"] = {"dispatched": "t1", "started": "t2"}
    s = running_snapshot(**per)
    agg = job("research", "r1-aggregator", **({"succeeded": 1} if phase == "Succeeded" else {"failed": 1}))
    agg_pod = pod(agg, ran=True, phase=phase, message=json.dumps(result), container=children.AGGREGATOR)
    return replace(s, aggregator=agg, aggregator_pods=(agg_pod,))


def test_the_end_of_the_run_stops_every_silo_commits_every_claim_and_reports_the_model() -> None:
    s = _finished(_result("Succeeded"))
    d = decide(s)
    assert sorted(d.delete_jobs) == [(f"clinic-{x}", f"r1-clinic-{x}") for x in "abc"]
    assert verbs(d) == []  # their pods still run: charged once they end
    stopped = tuple(replace(x, job=None, pods=tuple(pod(x.job, ran=True, phase="Succeeded", silo_name=x.spec.name,
                                                        deleting=True) for _ in (1,))) for x in s.silos)  # fmt: skip
    d = decide(replace(s, silos=stopped))
    assert sorted(v for _, _, v in verbs(d)) == [Verb.COMMIT] * 3 and d.delete_jobs == ()
    assert d.outcome.phase == "Succeeded" and d.outcome.progress is Progress.WORKING  # until every claim is settled
    fields = d.outcome.fields
    # no spec.evaluation: no accuracy is published, whatever a result holds
    assert fields["model"] == {"digest": "sha256:3", "artifact": "/artifacts/round-003.model"}
    assert "no accuracy (no public evaluation source is declared in spec.evaluation)" in d.outcome.ready.message
    assert fields["roundsCompleted"] == 3 and fields["submitted"] == "2/3"
    states = {p["name"]: (p["state"], [r["state"] for r in p["rounds"]]) for p in fields["participants"]}
    assert states["clinic-a"] == ("Submitted", ["Submitted"] * 3) and states["clinic-c"] == ("Dropped", ["Dropped"] * 3)
    recorded = [o for o in d.apply if o["kind"] == "ConfigMap"]
    assert json.loads(recorded[0]["data"]["aggregator"])["digest"] == "sha256:3"


def test_the_accuracy_published_is_the_aggregators_on_the_public_evaluation_source() -> None:
    spec = parse({**RAW, "evaluation": {"source": PUBLIC}}, "research")
    s = replace(_finished(_result("Succeeded", evaluationSource=PUBLIC, evaluationExamples=113)), spec=spec)
    outcome = decide(s).outcome
    assert outcome.fields["model"] == {"digest": "sha256:3", "artifact": "/artifacts/round-003.model",
                                       "accuracy": 0.93, "evaluationExamples": 113}  # fmt: skip
    assert f"accuracy 0.93 on 113 examples of the public {PUBLIC}" in outcome.ready.message


def test_an_evaluation_source_that_may_hold_a_silos_records_is_refused_before_any_claim() -> None:
    spec = parse({**RAW, "evaluation": {"source": "builtin://wine?part=evaluation"}}, "research")
    d = decide(snapshot(spec=spec))
    assert ready(d.outcome)[2] == "EvaluationSourceRefused" and d.ledger == () and d.create == ()
    assert "cannot evaluate a model trained on 'builtin://breast_cancer?shard=0&of=3'" in d.outcome.ready.message


def test_once_every_claim_is_committed_and_the_pods_are_gone_the_round_is_done() -> None:
    s = _finished(_result("Succeeded"))
    silos = tuple(replace(x, job=None, pods=(), ledger=Ledger((claim(x.spec.name, ClaimState.COMMITTED, dispatched="t1",
                                                                     started="t2"),))) for x in s.silos)  # fmt: skip
    d = decide(replace(s, silos=silos))
    assert d.ledger == () and d.delete_jobs == ()
    assert ready(d.outcome) == ("Succeeded", True, "Succeeded") and d.outcome.progress is Progress.DONE
    entry = d.outcome.fields["participants"][0]
    # an independent accountant reproduces the silo's bound from the σ, q and steps in status
    assert entry["epsilonSpent"] == 1.0 and entry["steps"] == entry["stepsPerRound"] * 3
    assert dp_sgd_epsilon(entry["noiseMultiplier"], entry["sampleRate"], entry["steps"], entry["delta"], "prv") > 0


def test_a_failed_run_names_who_dropped_and_still_commits_the_silos_that_ran() -> None:
    failed = {"kind": "FederatedResult", "status": "Failed", "roundsCompleted": 0, "rounds": 3, "history": [],
              "error": "round 1 failed: 2 of 3 silos dropped: clinic-b, clinic-c"}  # fmt: skip
    s = _finished(failed, phase="Failed")
    d = decide(s)
    assert d.outcome.phase == "Failed" and "clinic-b, clinic-c" in d.outcome.ready.message
    assert len(d.delete_jobs) == 3
    ended = tuple(replace(x, job=None, pods=(pod(x.job, ran=True, phase="Failed", silo_name=x.spec.name),))
                  for x in s.silos)  # fmt: skip
    assert sorted(v for _, _, v in verbs(decide(replace(s, silos=ended)))) == [Verb.COMMIT] * 3


def test_silos_that_never_ran_when_the_run_failed_are_released_once_their_pods_are_gone() -> None:
    s = _finished({"kind": "FederatedResult", "status": "Failed", "error": "x"}, phase="Failed")
    silos = tuple(replace(x, job=None, pods=()) for x in s.silos)
    silos = tuple(replace(x, ledger=Ledger((claim(x.spec.name, ClaimState.RESERVED, dispatched="t1"),))) for x in silos)
    d = decide(replace(s, silos=silos))
    assert sorted(v for _, _, v in verbs(d)) == [Verb.RELEASE] * 3


def test_a_rejected_claim_fails_the_round_and_gives_back_the_others() -> None:
    silos = (silo("clinic-a", claim_of=claim("clinic-a", ClaimState.RESERVED)),
             silo("clinic-b", claim_of=claim("clinic-b", ClaimState.REJECTED)),
             silo("clinic-c", claim_of=claim("clinic-c", ClaimState.WAITING)))  # fmt: skip
    d = decide(snapshot(*silos))
    assert sorted(verbs(d)) == [("clinic-a", "uid-r/clinic-a", Verb.RELEASE), ("clinic-c", "uid-r/clinic-c", Verb.RELEASE)]
    assert d.outcome.phase == "Failed" and d.supernodes == () and d.create == ()


# --- deletion ------------------------------------------------------------------------------------------


def test_deleting_a_running_round_commits_silos_that_ran_and_waits_for_their_pods() -> None:
    per = _jobs_running()
    per["clinic_b"]["pods"] = (pod(per["clinic_b"]["job"], ran=False, silo_name="clinic-b"),)
    s = replace(running_snapshot(**per), deleting=True)
    d = decide_deletion(s)
    assert ("clinic-a", "uid-r/clinic-a", Verb.COMMIT) in verbs(d) and ("clinic-c", "uid-r/clinic-c", Verb.COMMIT) in verbs(d)
    assert ("clinic-b", "uid-r/clinic-b", Verb.COMMIT) not in verbs(d)  # nothing of clinic-b ran
    assert not d.settled
    assert ("research", "r1-aggregator") in d.delete_jobs and ("clinic-b", "r1-clinic-b") in d.delete_jobs
    assert ("clinic-a", "r1-clinic-a-supernode") in d.delete_secrets
    assert ("clinic-b", "r1-clinic-b") in d.delete_policies  # no ownerReference reaches a silo's namespace


def test_a_deleted_round_is_settled_when_no_claim_is_live_and_no_pod_is_left() -> None:
    silos = tuple(silo(x.name, claim_of=claim(x.name, ClaimState.COMMITTED)) for x in SPEC.silos)
    assert decide_deletion(replace(snapshot(*silos), deleting=True)).settled


def test_a_deleted_round_waits_on_a_held_or_running_supernode_pod_and_not_on_one_that_ended_unheld() -> None:
    j = job("clinic-a", "r1-clinic-a", failed=1)
    held, ended = (pod(j, ran=True, phase="Failed", silo_name="clinic-a") for _ in range(2))
    running = pod(j, ran=True, silo_name="clinic-a")
    ended["metadata"]["finalizers"] = running["metadata"]["finalizers"] = []

    def settled(*pods: Any) -> bool:
        silos = tuple(silo(x.name, claim_of=claim(x.name, ClaimState.COMMITTED), pods=pods if x.name == "clinic-a" else ())
                      for x in SPEC.silos)  # fmt: skip
        return decide_deletion(replace(snapshot(*silos), deleting=True)).settled

    assert settled(ended)
    assert not settled(held) and not settled(running)


def test_a_settled_pod_that_ran_is_let_go_only_with_its_claim_and_key() -> None:
    per = _jobs_running()
    j = job("clinic-a", "r1-clinic-a", failed=1)
    per["clinic_a"] = {"job": j, "pods": (pod(j, ran=True, phase="Failed", silo_name="clinic-a"),)}
    d = decide(running_snapshot(**per))
    assert d.unhold == (("clinic-a", "r1-clinic-a-p", BudgetRef("clinic-a", "bc"), "uid-r/clinic-a", True),)
    assert ("clinic-a", "uid-r/clinic-a", Verb.START) in verbs(d)  # recorded first; act unholds only after


def test_the_keys_are_written_once_and_every_silo_key_is_registered() -> None:
    s = snapshot()
    stored = stored_keys(s)
    assert keys.wanted_secrets(OWNER, SPEC, stored, NOW) == []
    public = stored[("research", "r1-silo-keys")]["data"]
    assert sorted(public) == ["clinic-a.pub", "clinic-b.pub", "clinic-c.pub"]
    silo_secret = stored[("clinic-a", "r1-clinic-a-supernode")]
    assert "ownerReferences" not in silo_secret["metadata"] and CA_CERT in silo_secret["data"]
    without = {k: v for k, v in stored.items() if k != ("clinic-b", "r1-clinic-b-supernode")}
    rewrites = keys.wanted_secrets(OWNER, SPEC, without, NOW)
    assert [w.body["metadata"]["name"] for w in rewrites] == ["r1-clinic-b-supernode", "r1-silo-keys"]
