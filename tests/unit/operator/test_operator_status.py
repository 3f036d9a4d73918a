"""Conditions, status and Events written for a decided Outcome."""

from datetime import UTC, datetime, timedelta

import pytest

from securemodel.operator.budget.directory import NOT_OBSERVED
from securemodel.operator.conditions import Condition, Event, Outcome, Progress, event_for, merge_conditions, status_for
from securemodel.operator.secure_model import outcomes as model_outcomes

T0 = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)

WAITING = Outcome("WaitingForBudget", Condition("Ready", False, "WaitingForBudget", "waiting for ε=2"))


def test_first_status_sets_generation_phase_and_a_complete_ready_condition() -> None:
    status = status_for(WAITING, {}, 1, T0)
    assert status == {
        "observedGeneration": 1,
        "phase": "WaitingForBudget",
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "WaitingForBudget",
                "message": "waiting for ε=2",
                "lastTransitionTime": "2026-11-21T10:00:00Z",
                "observedGeneration": 1,
            },
            {
                "type": "Reconciling",
                "status": "False",
                "reason": "Reconciled",
                "message": "the spec is reconciled",
                "lastTransitionTime": "2026-11-21T10:00:00Z",
                "observedGeneration": 1,
            },
            {
                "type": "Stalled",
                "status": "False",
                "reason": "Progressing",
                "message": "nothing blocks progress",
                "lastTransitionTime": "2026-11-21T10:00:00Z",
                "observedGeneration": 1,
            },
        ],
    }


@pytest.mark.parametrize(
    ("progress", "reconciling", "stalled"),
    [(Progress.DONE, "False", "False"), (Progress.WORKING, "True", "False"), (Progress.STALLED, "False", "True")],
)
def test_kstatus_conditions_follow_the_progress(progress: Progress, reconciling: str, stalled: str) -> None:
    outcome = Outcome("Training", Condition("Ready", False, "Training", "Job m-train-v1 is training"), progress=progress)
    conditions = {c["type"]: c for c in status_for(outcome, {}, 4, T0)["conditions"]}
    assert (conditions["Reconciling"]["status"], conditions["Stalled"]["status"]) == (reconciling, stalled)
    assert {c["observedGeneration"] for c in conditions.values()} == {4}
    busy = conditions["Reconciling"] if reconciling == "True" else conditions["Stalled"] if stalled == "True" else None
    assert busy is None or (busy["reason"], busy["message"]) == ("Training", "Job m-train-v1 is training")


def test_last_transition_time_only_moves_when_the_status_changes() -> None:
    first = status_for(WAITING, {}, 1, T0)
    same = status_for(Outcome("WaitingForBudget", Condition("Ready", False, "Other", "new message")), first, 2, T1)
    assert same["conditions"][0]["lastTransitionTime"] == "2026-11-21T10:00:00Z"
    assert same["conditions"][0]["reason"] == "Other"
    assert same["conditions"][0]["observedGeneration"] == 2
    flipped = status_for(Outcome("Serving", Condition("Ready", True, "Serving", "ok")), same, 2, T1)
    assert flipped["conditions"][0]["lastTransitionTime"] == "2026-11-21T10:05:00Z"


def test_conditions_of_other_types_are_kept() -> None:
    foreign = {"type": "Trained", "status": "True", "reason": "Done", "message": "", "lastTransitionTime": "x"}
    merged = merge_conditions([foreign], [Condition("Ready", True, "Serving", "ok")], 3, T0)
    assert [c["type"] for c in merged] == ["Trained", "Ready"]
    assert merged[0] == foreign


def test_extra_fields_are_written_next_to_phase() -> None:
    outcome = Outcome("Available", Condition("Ready", True, "BudgetAvailable", ""), fields={"epsilonAvailable": 4.0})
    assert status_for(outcome, {}, 1, T0)["epsilonAvailable"] == 4.0


def test_an_event_is_posted_on_the_first_status_and_on_changes_only() -> None:
    assert event_for(WAITING, {}) == Event("Normal", "WaitingForBudget", "waiting for ε=2")
    current = status_for(WAITING, {}, 1, T0)
    assert event_for(WAITING, current) is None
    serving = Outcome("Serving", Condition("Ready", True, "Serving", "serving at https://m.ns.svc:8443"))
    assert event_for(serving, current) == Event("Normal", "Serving", "serving at https://m.ns.svc:8443")


def test_a_warning_outcome_posts_a_warning_event() -> None:
    exhausted = Outcome("Exhausted", Condition("Ready", True, "Exhausted", "no ε left"), warning=True)
    assert event_for(exhausted, {}) == Event("Warning", "Exhausted", "no ε left")


def test_a_budget_the_operator_has_not_read_yet_is_progress_not_a_stall() -> None:
    waiting = model_outcomes.budget_refused("b", NOT_OBSERVED, "not observed yet")
    refused = model_outcomes.budget_refused("b", "DataNotCovered", "the budget does not cover it")
    assert (waiting.progress, refused.progress) == (Progress.WORKING, Progress.STALLED)
    assert not waiting.warning and refused.warning
