"""A public SecureModel (``spec.privacy: {public: true}``): trained without differential privacy, claiming nothing,
and only while no PrivacyBudget of its namespace protects any of its data (pure decisions and the observed refusal)."""

from __future__ import annotations

import itertools
import json
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from securemodel.data.sources import shard_indices
from securemodel.operator.budget.directory import DATA_PROTECTED, EVALUATION_PROTECTED, NOT_OBSERVED, BudgetDirectory, Refusal
from securemodel.operator.budget.ledger import BudgetRef
from securemodel.operator.conditions import Progress
from securemodel.operator.secure_model import children, outcomes, starts
from securemodel.operator.secure_model.decide import Decision, decide, decide_deletion
from securemodel.operator.secure_model.observe import _public_refusal
from securemodel.operator.secure_model.spec import PublicSpec, parse
from securemodel.operator.secure_model.starts import InitArtifact, InitProblem
from securemodel.privacy import Ledger
from test_operator_decide import COMPRESS_RESULT, DONE, OWNER, RAW, RUNNING, SPEC, job, keyed, pod, snapshot

PUBLIC_RAW: dict[str, Any] = {**RAW, "data": {"source": "builtin://breast_cancer?shard=0&of=3"}, "privacy": {"public": True}}
PUBLIC = parse(PUBLIC_RAW)
PV = PUBLIC.versions
TRAIN = children.train_job_name("m", PV.training)
COMPRESS = children.compress_job_name("m", PV.version)
RESULT = {"kind": "TrainResult", "status": "Succeeded", "public": True, "steps": 16, "epochs": 2, "digest": "d1",
          "sizeBytes": 100}  # fmt: skip
PROTECTED = Refusal(DATA_PROTECTED, "spec.data.source builtin://breast_cancer?shard=0&of=3 is protected by PrivacyBudget b")


def public(**changes: Any) -> Any:
    """A public model's snapshot: no ledger, no calibration."""
    return snapshot(**{"spec": PUBLIC, "ledger": None, "plan": None, "calibration": None, **changes})


def outcome_of(decision: Decision) -> Any:
    assert decision.outcome is not None
    return decision.outcome


def condition(decision: Decision, kind: str) -> Any:
    return next(c for c in outcome_of(decision).conditions if c.type == kind)


def command(job_body: dict[str, Any]) -> list[str]:
    return list(job_body["spec"]["template"]["spec"]["containers"][0]["command"])


# --- the spec ----------------------------------------------------------------------------------------


def test_public_is_its_own_privacy_kind_and_training_version() -> None:
    assert PUBLIC.privacy == PublicSpec() and PUBLIC.public and not SPEC.public
    budgeted = parse({**PUBLIC_RAW, "privacy": {"budgetRef": "b", "epsilon": 2.0}})
    assert budgeted.versions.training != PV.training  # same data and model, other privacy: another training
    # the budget form's defaults are the parser's now (the schema has none, so {public: true} stays exact)
    assert parse({**RAW, "privacy": {"budgetRef": "b", "epsilon": 2.0, "delta": 1e-5, "maxGradNorm": 1.0,
                                     "accountant": "prv"}}).versions == SPEC.versions  # fmt: skip


# --- the decision ------------------------------------------------------------------------------------


def test_an_unprotected_public_model_trains_without_a_claim_and_with_the_public_worker_flags() -> None:
    decision = decide(public())
    assert not decision.ledger and decision.train is None
    assert decision.public_train is not None
    args = command(decision.public_train)
    assert args[args.index("--epochs") + 1] == "2" and args[args.index("--batch-size") + 1] == "64" and "--public" in args
    assert not {"--noise-multiplier", "--sample-rate", "--steps", "--max-grad-norm"} & set(args)
    metadata = decision.public_train["spec"]["template"]["metadata"]
    assert "finalizers" not in metadata and children.BUDGET_LABEL not in metadata["labels"]  # no claim to settle
    assert {o["kind"] for o in decision.apply} >= {"PersistentVolumeClaim"} and decision.secrets  # the pod's key, volume
    assert condition(decision, outcomes.PUBLIC_DATA).status is True
    assert outcome_of(decision).phase == "Training"


def test_a_budgeted_model_never_gets_the_public_flag() -> None:
    decision = decide(snapshot(ledger=Ledger(()), refusal=None))
    assert decision.public_train is None
    with pytest.raises(AssertionError):
        children.train_job(OWNER, SPEC, SPEC.versions.training, None, "worker:dev")


def test_a_public_model_is_not_decided_while_a_budget_of_the_namespace_is_unread() -> None:
    cold = decide(public(refusal=Refusal(NOT_OBSERVED, "the spec of PrivacyBudget b is not observed yet")))
    assert cold.public_train is None and not cold.ledger and not cold.secrets
    outcome = outcome_of(cold)
    assert (outcome.phase, outcome.ready.reason, outcome.progress) == ("WaitingForBudget", NOT_OBSERVED, Progress.WORKING)


def test_a_public_model_over_protected_data_is_refused_with_a_warning_and_trains_nothing() -> None:
    refused = decide(public(refusal=PROTECTED))
    assert refused.public_train is None and not refused.ledger and not refused.secrets
    outcome = outcome_of(refused)
    assert (outcome.phase, outcome.ready.reason, outcome.progress) == ("Failed", DATA_PROTECTED, Progress.STALLED)
    assert outcome.warning and "PrivacyBudget b" in outcome.ready.message  # Warning Event with reason DataProtected
    assert condition(refused, outcomes.PUBLIC_DATA).reason == DATA_PROTECTED


def test_a_budget_that_comes_to_protect_the_data_stops_a_running_public_training() -> None:
    running = {"jobs": {TRAIN: job(TRAIN, "train", PV.training, active=1)},
               "pods": (pod(TRAIN, "train", PV.training, state=RUNNING, held=False),)}  # fmt: skip
    assert decide(public(**running)).stop == ()
    stopped = decide(public(refusal=PROTECTED, **running))
    assert stopped.stop == (TRAIN,) and stopped.public_train is None
    assert outcome_of(stopped).ready.reason == "TrainingStopped" and outcome_of(stopped).progress is Progress.STALLED
    # once suspended it is not resumed, even if the budget goes away
    suspended = {**running, "jobs": {TRAIN: {**job(TRAIN, "train", PV.training), "spec": {"suspend": True}}}, "pods": ()}
    again = decide(public(**suspended))
    assert again.stop == () and again.public_train is None and outcome_of(again).ready.reason == "TrainingStopped"


def trained_public(**changes: Any) -> Any:
    jobs = {TRAIN: job(TRAIN, "train", PV.training, succeeded=1), COMPRESS: job(COMPRESS, "compress", PV.version, succeeded=1)}
    pods = (pod(TRAIN, "train", PV.training, state=DONE, phase="Succeeded", result=RESULT, held=False),
            pod(COMPRESS, "compress", PV.version, state=DONE, phase="Succeeded", result=COMPRESS_RESULT))  # fmt: skip
    return public(jobs=jobs, pods=pods, pvc=children.artifacts_pvc(OWNER, "256Mi"), **keyed(PUBLIC), **changes)


def test_a_trained_public_model_is_compressed_and_served_and_says_it_spent_nothing() -> None:
    decision = decide(trained_public())
    assert not decision.ledger and decision.public_train is None
    fields = outcome_of(decision).fields
    assert fields["privacy"]["public"] is True and "differential privacy" in fields["privacy"]["note"]
    assert not {"epsilonSpent", "epsilonClaimed", "noiseMultiplier"} & set(fields["privacy"])
    assert "Deployment" in {o["kind"] for o in decision.apply}
    assert "without differential privacy" in condition(decision, outcomes.TRAINED).message


def test_a_budget_that_protects_the_data_after_training_is_stated_and_nothing_trains_again() -> None:
    decision = decide(trained_public(refusal=PROTECTED))
    assert decision.public_train is None and decision.stop == () and not decision.ledger
    public_data = condition(decision, outcomes.PUBLIC_DATA)
    assert (public_data.status, public_data.reason) == (False, DATA_PROTECTED)
    assert "Deployment" in {o["kind"] for o in decision.apply}  # what was trained on public data keeps serving
    # a new version of the spec is refused: nothing reads the now protected data without DP again
    changed = decide(trained_public(refusal=PROTECTED, spec=parse({**PUBLIC_RAW, "training": {"epochs": 3}})))
    assert changed.public_train is None and outcome_of(changed).ready.reason == DATA_PROTECTED


def test_deleting_a_public_model_settles_nothing() -> None:
    assert decide_deletion(public(deleting=True)).settled


# --- what is refused, observed -------------------------------------------------------------------------


def refusal_for(spec: Any, budgets: dict[str, list[str]], *, recorded: bool = True) -> Refusal | None:
    directory = BudgetDirectory()
    indexed = {BudgetRef("clinic", name): [Ledger(())] for name in budgets}
    if recorded:
        for name, sources in budgets.items():
            directory.put(BudgetRef("clinic", name), {"epsilon": 1.0, "data": {"sources": sources}})
    current, found = SimpleNamespace(budgets=directory), SimpleNamespace(ledgers=indexed)
    return _public_refusal(current, found, OWNER, spec)  # type: ignore[arg-type]


def test_the_refusal_waits_for_every_budget_of_the_namespace_and_names_the_protecting_ones() -> None:
    cold = refusal_for(PUBLIC, {"b": ["builtin://iris"]}, recorded=False)
    assert cold is not None and cold.reason == NOT_OBSERVED and "PrivacyBudget b" in cold.message
    assert refusal_for(PUBLIC, {"b": ["builtin://iris"]}) is None
    assert refusal_for(PUBLIC, {}) is None  # a namespace without budgets: nothing to wait for
    # a budget over the whole dataset, or over another split's shard, protects some of shard 0 of 3
    for sources in (["builtin://breast_cancer"], ["builtin://breast_cancer?shard=1&of=2"]):
        refused = refusal_for(PUBLIC, {"a": ["builtin://iris"], "b": sources})
        assert refused is not None and refused.reason == DATA_PROTECTED and "PrivacyBudget b" in refused.message
    # another shard of the same split is other data
    assert refusal_for(PUBLIC, {"b": ["builtin://breast_cancer?shard=1&of=3", "builtin://breast_cancer?shard=2&of=3"]}) is None
    evaluated = parse({**PUBLIC_RAW, "data": {"source": "pvc://open/train.csv", "samples": 10,
                                              "schema": {"label": {"classes": ["a", "b"]}},
                                              "evaluation": {"source": "pvc://clinic/eval.csv", "samples": 5}}})  # fmt: skip
    refused = refusal_for(evaluated, {"b": ["pvc://clinic/"]})
    assert refused is not None and refused.reason == EVALUATION_PROTECTED


N = 456  # breast_cancer's training part
SOURCES = ["builtin://breast_cancer", *(f"builtin://breast_cancer?shard={i}&of={k}" for k in (2, 3) for i in range(k))]


def examples(source: str) -> set[int]:
    """The examples of the training part a source reads (the shard rule)."""
    if "?" not in source:
        return set(range(N))
    i, k = (int(part.split("=")[1]) for part in source.split("?")[1].split("&"))
    return set(np.asarray(shard_indices(N, i, k)).tolist())


@pytest.mark.parametrize(("protected", "declared"), list(itertools.product(SOURCES, SOURCES)))
def test_no_public_training_ever_reads_an_example_a_budget_protects(protected: str, declared: str) -> None:
    spec = parse({**PUBLIC_RAW, "data": {"source": declared}})
    decision = decide(public(spec=spec, refusal=refusal_for(spec, {"b": [protected]})))
    if examples(protected) & examples(declared):
        assert decision.public_train is None
    elif protected.split("&")[-1] == declared.split("&")[-1]:  # another shard of the same split: trained
        assert decision.public_train is not None
    # (shards of different splits are refused even where the shard rule happens to keep them apart: conservative)


# --- as a starting point -------------------------------------------------------------------------------


def source_entry() -> dict[str, Any]:
    return starts.source_entry("uid-p", PUBLIC_RAW)


def test_a_public_source_model_starts_a_fine_tuning_only_while_its_data_is_unprotected() -> None:
    entry = source_entry()
    assert entry == {"uid": "uid-p", "public": "builtin://breast_cancer?shard=0&of=3", "training": PV.training}
    assert starts.source_entry("uid-q", RAW) == {"uid": "uid-q", "public": None, "training": None}
    assert starts.public_source("p", entry, PV.training, (), ()) is None
    protected = starts.public_source("p", entry, PV.training, (), ("b",))
    assert protected is not None and protected.reason == starts.SOURCE_PROTECTED and "PrivacyBudget b" in protected.message
    cold = starts.public_source("p", entry, PV.training, ("b",), ())
    assert cold is not None and cold.reason == starts.SOURCE_NOT_READY
    # a version trained before the spec changed its data cannot be checked: wait until the spec's version serves
    older = starts.public_source("p", entry, "v00000000", (), ())
    assert older is not None and older.reason == starts.SOURCE_NOT_READY


def test_a_private_fine_tuning_of_a_public_model_claims_once_the_source_is_clear() -> None:
    tuned = parse({**RAW, "data": {"source": "builtin://breast_cancer?shard=1&of=3"},
                   "model": {"architecture": "mlp", "from": {"secureModelRef": "p"}}})  # fmt: skip
    start = InitArtifact("p-artifacts", f"/artifacts/{PV.training}/model.smdl", "p-data-key",
                         json.dumps({"encoding": "fp32", "training": PV.training, "uid": "uid-p"}), "sha256:" + "1" * 64,
                         "SecureModel p's trained model")  # fmt: skip
    base = {"spec": tuned, "ledger": Ledger(())}
    blocked = decide(snapshot(start=InitProblem(starts.SOURCE_PROTECTED, "protected"), **base))
    assert not blocked.ledger and outcome_of(blocked).progress is Progress.STALLED
    granted = decide(snapshot(start=start, **base))
    assert [a.verb for a in granted.ledger] == ["submit"]  # the fine-tuning's own claim, on its own data


def test_a_public_training_of_a_version_the_spec_left_is_stopped_and_a_deleted_jobs_pods_end_first() -> None:
    old = "v00000000"
    old_job = children.train_job_name("m", old)
    left = decide(public(jobs={old_job: job(old_job, "train", old, active=1)},
                         pods=(pod(old_job, "train", old, state=RUNNING, held=False),)))  # fmt: skip
    assert left.stop == (old_job,) and left.public_train is not None  # nothing to settle: the new version starts
    orphaned = decide(public(pods=(pod(TRAIN, "train", PV.training, state=RUNNING, held=False),)))
    assert orphaned.public_train is None and orphaned.stop == ()
    assert "deleted Job" in outcome_of(orphaned).ready.message
