"""A model retrained under a new claim: which claims it leaves, and what its status says meanwhile."""

from datetime import UTC, datetime

from securemodel.operator import pipeline_status as ps
from securemodel.operator.claim_status import in_budget_stage, may_hold_claim, stale_claims, while_serving
from securemodel.operator.pipeline import in_pipeline
from securemodel.operator.status import READY, Condition, Outcome, status_for
from securemodel.privacy import Claim, ClaimState, Consumer, Ledger

NOW = "2026-11-22T10:00:00Z"


def claim(uid: str, version: str, state: ClaimState) -> Claim:
    return Claim(Consumer("SecureModel", "clinic-a", "m", uid, version), 0.5, 1e-5, state, NOW)


def test_only_live_claims_of_other_versions_of_the_same_model_are_stale() -> None:
    ledger = Ledger(
        (
            claim("uid-m", "v1", ClaimState.COMMITTED),  # spent: stays spent
            claim("uid-m", "v2", ClaimState.RESERVED),
            claim("uid-m", "v3", ClaimState.WAITING),
            claim("uid-m", "v4", ClaimState.WAITING),  # the version the spec asks for
            claim("uid-other", "v2", ClaimState.WAITING),
        )
    )
    assert [c.consumer.version for c in stale_claims(ledger, "uid-m", "v4")] == ["v2", "v3"]
    assert stale_claims(ledger, "uid-m", "v1") == tuple(ledger.claims[1:4])


def test_the_serving_version_keeps_ready_true_while_a_new_one_is_made() -> None:
    training = ps.training(ps.JobState(ps.JobPhase.RUNNING, None, True), "m-train-v2")
    kept = while_serving(training, "v1", available=True)
    assert kept.phase == training.phase and kept.conditions == training.conditions
    assert kept.ready.status and kept.ready.reason == "Serving"
    assert kept.ready.message.startswith("version v1 serves") and training.ready.message in kept.ready.message
    assert while_serving(training, "v1", available=False) == training  # nothing answers: not Ready
    assert while_serving(training, None, available=True) == training  # first version: nothing served yet
    serving = Outcome("Serving", Condition(READY, True, "Serving", "1/1 replicas available"))
    assert while_serving(serving, "v1", available=True) == serving


def test_a_new_version_returns_the_model_to_the_budget_stage_and_clears_the_old_numbers() -> None:
    before = {
        "conditions": [{"type": "BudgetReserved", "status": "True", "reason": "Committed"}],
        "privacy": {"epsilonSpent": 0.4},
        "model": {"digest": "sha256:old"},
    }
    assert in_pipeline(before)
    outcome = ps.new_version("b", "v2")
    after = status_for(outcome, before, 2, datetime(2026, 11, 22, tzinfo=UTC))
    assert in_budget_stage(after, "v2") and may_hold_claim(after) and not in_pipeline(after)
    assert after["privacy"] is None and after["model"] is None  # deleted by the merge patch
    reasons = {c["type"]: (c["status"], c["reason"]) for c in after["conditions"]}
    assert reasons == {kind: ("False", "NewVersion") for kind in ("Ready", "BudgetReserved", "Trained", "Compressed")}


def test_while_compressing_the_model_block_has_no_compressed_numbers_of_another_version() -> None:
    fields = {"model": {"digest": "sha256:trained", "sizeBytes": 10, "accuracy": 0.9}, "endpoint": "https://m"}
    cleared = ps.not_compressed(fields)
    assert cleared["model"] == {**fields["model"], "compressedSizeBytes": None, "compressedAccuracy": None,
                                "sparsity": None}  # fmt: skip
    assert cleared["endpoint"] == "https://m"
