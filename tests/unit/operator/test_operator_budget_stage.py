"""A SecureModel's budget stage: the run it plans, the noise it calibrates, the status its claim gives."""

import asyncio
import concurrent.futures
import math
from datetime import UTC, datetime
from typing import Any

import pytest

from securemodel.operator.calibration import Calibrator, Plan, plan
from securemodel.operator.claim_status import (
    budget_missing,
    calibration_failed,
    claimed,
    in_budget_stage,
    may_hold_claim,
)
from securemodel.operator.pipeline import in_pipeline
from securemodel.operator.status import status_for
from securemodel.operator.wakeups import Wakeups
from securemodel.privacy import Claim, ClaimState, Consumer, RejectionReason, dp_sgd_epsilon

CONSUMER = Consumer("SecureModel", "clinic-a", "m", "uid-1")


def spec(source: str = "builtin://wine", **data: Any) -> dict[str, Any]:
    """A SecureModel spec as the API server stores it, defaults filled in."""
    return {
        "data": {"source": source, "validationSplit": 0.2, **data},
        "privacy": {"budgetRef": "wine", "epsilon": 1.0, "delta": 1e-5, "maxGradNorm": 1.0, "accountant": "rdp"},
        "training": {"epochs": 2, "batchSize": 64, "learningRate": 0.1, "optimizer": "sgd", "seed": 0},
    }


def test_the_plan_samples_the_training_part_of_the_data() -> None:
    planned = plan(spec(), 1.0, 1e-5)
    assert planned == Plan(epsilon=1.0, delta=1e-5, accountant="rdp", examples=143, batch_size=64, epochs=2)
    assert planned.sample_rate == 64 / 143, "q is over the 178 - floor(178 * 0.2) training examples"
    assert planned.steps == math.ceil(2 * 143 / 64)


def test_the_plan_of_a_shard_and_of_a_pvc_file() -> None:
    assert plan(spec("builtin://breast_cancer?shard=2&of=3"), 1.0, 1e-5).examples == 189 - 37
    assert plan(spec("pvc://clinic/x.npz", samples=1000), 1.0, 1e-5).examples == 800


def test_a_plan_fails_for_a_batch_larger_than_the_training_part() -> None:
    too_big = spec("builtin://iris")
    too_big["training"]["batchSize"] = 121
    with pytest.raises(ValueError, match="batchSize 121 exceeds the 120 training examples of builtin://iris"):
        plan(too_big, 1.0, 1e-5)


def test_concurrent_requests_for_one_plan_share_one_calibration() -> None:
    planned = plan(spec(), 1.0, 1e-5)

    async def twice() -> list[Any]:
        with concurrent.futures.ThreadPoolExecutor(2) as executor:
            calibrator = Calibrator(executor)
            return list(await asyncio.gather(calibrator.calibrate(planned), calibrator.calibrate(planned)))

    first, second = asyncio.run(twice())
    assert first is second
    assert (first.sample_rate, first.steps) == (planned.sample_rate, planned.steps)
    assert dp_sgd_epsilon(first.noise_multiplier, first.sample_rate, first.steps, 1e-5, "rdp") <= 1.0


def claim(state: ClaimState, reason: RejectionReason | None = None) -> Claim:
    return Claim(CONSUMER, 1.0, 1e-5, state, "2026-11-21T10:00:00Z", reason)


def conditions(outcome: Any) -> dict[str, tuple[bool, str]]:
    return {c.type: (c.status, c.reason) for c in (outcome.ready, *outcome.conditions)}


def test_a_waiting_claim_waits_for_budget_with_the_calibration_in_status() -> None:
    planned = plan(spec(), 1.0, 1e-5)
    outcome = claimed("wine", claim(ClaimState.WAITING), planned, 2.5)
    assert outcome is not None and outcome.phase == "WaitingForBudget"
    assert conditions(outcome) == {"Ready": (False, "WaitingForBudget"), "BudgetReserved": (False, "Waiting")}
    assert outcome.fields["privacy"] == {
        "epsilonClaimed": 1.0,
        "delta": 1e-5,
        "noiseMultiplier": 2.5,
        "sampleRate": 64 / 143,
        "steps": 5,
        "accountant": "rdp",
    }


def test_a_reserved_claim_ends_the_stage_before_any_training() -> None:
    outcome = claimed("wine", claim(ClaimState.RESERVED), plan(spec(), 1.0, 1e-5), 2.5)
    assert outcome is not None and outcome.phase == "WaitingForBudget"
    assert conditions(outcome) == {"Ready": (False, "BudgetReserved"), "BudgetReserved": (True, "Reserved")}
    assert outcome.ready.message == (
        "ε=1, δ=1e-05 reserved from PrivacyBudget wine for σ=2.5, q=0.4476, 5 steps; training has not started"
    )


@pytest.mark.parametrize("reason", list(RejectionReason))
def test_a_rejected_claim_fails_the_model_with_the_budgets_reason(reason: RejectionReason) -> None:
    outcome = claimed("wine", claim(ClaimState.REJECTED, reason), plan(spec(), 1.0, 1e-5), 2.5)
    assert outcome is not None and outcome.phase == "Failed" and outcome.warning
    assert conditions(outcome) == {"Ready": (False, reason.value), "BudgetReserved": (False, reason.value)}


def test_a_committed_claim_hands_the_model_to_the_training_stage() -> None:
    # The model came back to a version it trained before: no new claim, the training stage takes over.
    outcome = claimed("wine", claim(ClaimState.COMMITTED), plan(spec(), 1.0, 1e-5), 2.5)
    assert conditions(outcome)["BudgetReserved"] == (True, "Committed")
    stored = status_for(outcome, {}, 1, datetime(2026, 11, 21, tzinfo=UTC))
    assert in_pipeline(stored) and not in_budget_stage(stored, "v1") and not may_hold_claim(stored)


def test_missing_budgets_and_failed_calibrations_have_their_own_reasons() -> None:
    missing = budget_missing("wine")
    assert missing.phase == "WaitingForBudget"
    assert conditions(missing) == {"Ready": (False, "BudgetNotFound"), "BudgetReserved": (False, "BudgetNotFound")}
    failed = calibration_failed("wine", "target epsilon 0.001 is unreachable")
    assert failed.phase == "Failed"
    assert conditions(failed) == {"Ready": (False, "CalibrationFailed"), "BudgetReserved": (False, "CalibrationFailed")}
    assert failed.ready.message == "no ε claimed from PrivacyBudget wine: target epsilon 0.001 is unreachable"


def status_of(outcome: Any) -> dict[str, Any]:
    return status_for(outcome, {}, 1, datetime.now(UTC))


def test_the_stage_runs_until_the_claim_is_granted_or_over_and_the_finalizer_stays_while_it_is_live() -> None:
    planned = plan(spec(), 1.0, 1e-5)
    fresh: dict[str, Any] = {}
    waiting = status_of(claimed("wine", claim(ClaimState.WAITING), planned, 2.5))
    reserved = status_of(claimed("wine", claim(ClaimState.RESERVED), planned, 2.5))
    refused = claim(ClaimState.REJECTED, RejectionReason.EPSILON_ABOVE_BUDGET)
    rejected = status_of(claimed("wine", refused, planned, 2.5))
    missing = status_of(budget_missing("wine"))
    failed = status_of(calibration_failed("wine", "unreachable"))
    rejected["version"] = "v1"
    assert [in_budget_stage(s, "v1") for s in (fresh, waiting, missing, failed, reserved, rejected)] == [
        True, True, True, True, False, False
    ]  # fmt: skip
    # A refused claim is final for its version only: a spec changed to another version claims anew.
    assert in_budget_stage(rejected, "v2")
    assert not in_budget_stage(reserved, "v2")  # the training stage settles what it holds first
    assert [may_hold_claim(s) for s in (fresh, waiting, missing, failed, reserved, rejected)] == [
        True, True, True, True, True, False
    ]  # fmt: skip


def test_a_wakeup_notified_after_listening_is_not_lost() -> None:
    async def scenario() -> tuple[bool, bool]:
        wakeups = Wakeups()
        with wakeups.listen("budget", "model") as changed:
            wakeups.notify("other")
            unrelated = changed.is_set()
            wakeups.notify("model")
            await asyncio.wait_for(changed.wait(), 1)
        wakeups.notify("model")  # nobody listens any more: a no-op
        return unrelated, changed.is_set()

    assert asyncio.run(scenario()) == (False, True)
