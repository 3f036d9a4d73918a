"""A SecureModel with ``spec.model.fromRound``: which round model it serves, when it waits, and that it claims nothing."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from securemodel.operator.conditions import Progress
from securemodel.operator.federated import children as round_children
from securemodel.operator.secure_model import children, network, rounds
from securemodel.operator.secure_model.decide import Snapshot, decide
from securemodel.operator.secure_model.rounds import RoundModel, RoundProblem, resolve
from securemodel.operator.secure_model.spec import parse

NOW = datetime(2026, 11, 27, tzinfo=UTC)
OWNER = children.Owner("served", "research", "uid-s")
DIGEST = "sha256:" + "ab" * 32
ROUND_SPEC = {
    "model": {"secureModelRef": "tumor"},
    "clients": [{"name": f"c{i}", "namespace": f"clinic-{i}", "budgetRef": "b",
                 "data": {"source": f"builtin://breast_cancer?shard={i}&of=3"}} for i in range(3)],
    "privacy": {"epsilon": 1.0, "delta": 1e-5},
    "rounds": 2,
}  # fmt: skip
RAW: dict[str, Any] = {
    "model": {"fromRound": "fl"},
    "data": {"source": "builtin://breast_cancer", "evaluation": {"source": "builtin://breast_cancer?part=evaluation"}},
    "compression": {"quantization": "int8"},
    "serving": {"replicas": 1, "clients": ["frontend"]},
}
SPEC = parse(RAW)
V = SPEC.versions
COMPRESS = children.compress_job_name("served", V.version)


def entry(phase: str | None = "Running", message: str = "") -> dict[str, Any]:
    status = {"phase": phase, "conditions": [{"type": "Ready", "status": "False", "message": message}]}
    return rounds.round_entry("uid-fl", ROUND_SPEC, status)


def results(**result: Any) -> dict[str, Any]:
    return {"metadata": {"name": round_children.results_name("fl"), "namespace": "research"},
            "data": {"aggregator": json.dumps(result)}}  # fmt: skip


SUCCEEDED = results(status="Succeeded", artifact="/artifacts/round-002.model", digest=DIGEST, roundsCompleted=2)


# --- which round model -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("found", "stored", "reason", "detail"),
    [
        (None, None, rounds.ROUND_NOT_FOUND, "does not exist"),
        (entry(), None, rounds.WAITING_FOR_ROUND, "not finished"),
        (entry(), results(status="Running", roundsCompleted=1, artifact="/artifacts/round-001.model", digest=DIGEST),
         rounds.WAITING_FOR_ROUND, "not finished"),
        (entry("Failed", "BudgetRefused: clinic-0 does not consent"), None, rounds.ROUND_FAILED, "does not consent"),
        (entry("Failed"), results(status="Failed", error="round 1 failed: 2 of 3 silos dropped"), rounds.ROUND_FAILED,
         "2 of 3 silos dropped"),
        (entry("Succeeded"), results(status="Succeeded", artifact="/etc/passwd", digest=DIGEST), rounds.ROUND_FAILED,
         "no valid global model"),
        (entry("Succeeded"), results(status="Succeeded", artifact="/artifacts/round-001.model", digest="sha256:x"),
         rounds.ROUND_FAILED, "no valid global model"),
    ],
)  # fmt: skip
def test_a_round_without_a_global_model_says_why(found: Any, stored: Any, reason: str, detail: str) -> None:
    problem = resolve("fl", found, stored)
    assert isinstance(problem, RoundProblem)
    assert problem.reason == reason and detail in problem.message
    assert problem.stalled is (reason != rounds.WAITING_FOR_ROUND)


def test_a_succeeded_round_gives_its_last_global_model_and_its_silos_data() -> None:
    found = resolve("fl", entry("Succeeded"), SUCCEEDED)
    assert found == RoundModel(name="fl", uid="uid-fl", artifact="/artifacts/round-002.model", digest=DIGEST,
                               sources=tuple(f"builtin://breast_cancer?shard={i}&of=3" for i in range(3)),
                               epsilon=1.0, delta=1e-5, rounds=2)  # fmt: skip
    assert (found.pvc, found.data_key_secret) == ("fl-artifacts", "fl-data-key")


def test_the_final_round_number_is_the_rounds_own_whatever_its_results_config_map_says() -> None:
    """A results ConfigMap edited to name round-001 of the same run: the compress pod still expects round 2 of
    the round's uid, so that file is refused (tests/unit/workers/test_worker_compress_from_round.py)."""
    edited = results(status="Succeeded", artifact="/artifacts/round-001.model", digest=DIGEST, roundsCompleted=1)
    found = resolve("fl", entry("Succeeded"), edited)
    assert isinstance(found, RoundModel) and (found.uid, found.rounds) == ("uid-fl", 2)


# --- the spec --------------------------------------------------------------------------------------


def test_the_spec_needs_no_data_nor_privacy_and_its_version_follows_the_round() -> None:
    bare = parse({"model": {"fromRound": "fl"}})
    assert bare.data is None and bare.privacy is None and bare.evaluation is None
    assert parse({"model": {"fromRound": "fl2"}}).versions.training != bare.versions.training
    # training settings are not used without training: they do not make a new version
    assert parse({"model": {"fromRound": "fl"}, "training": {"epochs": 3}}).versions == bare.versions
    assert SPEC.evaluation is not None and SPEC.evaluation.source == "builtin://breast_cancer?part=evaluation"


# --- the decision ----------------------------------------------------------------------------------


def snapshot(found: RoundModel | RoundProblem, **changes: Any) -> Snapshot:
    base = Snapshot(
        owner=OWNER, generation=1, deleting=False, finalized=True, rotation=None, spec=SPEC, image="worker:dev",
        own_code=True, ledger=None, refusal=None, plan=None, calibration=None, calibration_error=None, jobs={},
        pods=(), deployment=None, service=None, pvc=None, results=None, secrets={}, now=NOW,
        network_policies={p["metadata"]["name"]: p for p in (network.isolated_policy(OWNER), network.serving_policy(OWNER, None))}, round=found,
    )  # fmt: skip
    return replace(base, **changes)


def _conditions(decision: Any) -> dict[str, Any]:
    return {c.type: c for c in decision.outcome.conditions}


@pytest.mark.parametrize(
    ("found", "phase", "progress"),
    [
        (RoundProblem(rounds.ROUND_NOT_FOUND, "missing"), "WaitingForRound", Progress.STALLED),
        (RoundProblem(rounds.WAITING_FOR_ROUND, "running"), "WaitingForRound", Progress.WORKING),
        (RoundProblem(rounds.ROUND_FAILED, "failed"), "Failed", Progress.STALLED),
    ],
)
def test_without_the_rounds_model_nothing_is_made_and_nothing_claimed(found: RoundProblem, phase: str,
                                                                       progress: Progress) -> None:  # fmt: skip
    decision = decide(snapshot(found))
    assert (decision.outcome.phase, decision.outcome.ready.reason, decision.outcome.progress) == (phase, found.reason, progress)
    assert _conditions(decision)["Trained"].reason == found.reason
    assert not decision.ledger and decision.train is None and not decision.create and not decision.secrets
    assert {obj["kind"] for obj in decision.apply} <= {"NetworkPolicy"}


ROUND_MODEL = resolve("fl", entry("Succeeded"), SUCCEEDED)


def test_the_rounds_model_is_compressed_without_training_or_claim() -> None:
    assert isinstance(ROUND_MODEL, RoundModel)
    decision = decide(snapshot(ROUND_MODEL))

    assert not decision.ledger and decision.train is None
    assert (decision.outcome.phase, decision.outcome.ready.reason) == ("Compressing", "Compressing")
    assert _conditions(decision)["Trained"].status and "BudgetReserved" not in _conditions(decision)
    privacy = decision.outcome.fields["privacy"]
    assert privacy["federatedRound"] == "fl" and "epsilonSpent" not in privacy and "epsilonClaimed" not in privacy
    assert "no claim" in privacy["note"]
    (job,) = decision.create
    assert job["metadata"]["name"] == COMPRESS
    pod = job["spec"]["template"]["spec"]
    args = pod["containers"][0]["command"]
    assert args[args.index("--input") + 1] == "/round/round-002.model"
    assert args[args.index("--input-digest") + 1] == DIGEST and "--from-round" in args
    # authenticated as the round's final global model: its uid and spec.rounds
    assert (args[args.index("--input-round-uid") + 1], args[args.index("--input-round") + 1]) == ("uid-fl", "2")
    assert [args[i + 1] for i, a in enumerate(args) if a == "--training-source"] == list(ROUND_MODEL.sources)
    volumes = {v["name"]: v for v in pod["volumes"]}
    # the round's volume read-only, the round's key; no data volume of any silo
    assert volumes["round"]["persistentVolumeClaim"] == {"claimName": "fl-artifacts", "readOnly": True}
    assert volumes["round-key"]["secret"]["secretName"] == "fl-data-key"
    assert {m["name"]: m.get("readOnly") for m in pod["containers"][0]["volumeMounts"]}["round"] is True
    assert "data" not in volumes
    assert pod["initContainers"][0]["command"][-1] == f"/artifacts/{V.training}"
    # the model's own key and volume are made for the output
    assert children.data_key_secret_name("served") in {w.body["metadata"]["name"] for w in decision.secrets}
    assert "PersistentVolumeClaim" in {obj["kind"] for obj in decision.apply}


COMPRESSED = {"kind": "CompressResult", "status": "Succeeded", "digest": "sha256:" + "cd" * 32,
              "compressedSizeBytes": 10, "accuracy": 0.9, "compressedAccuracy": 0.89, "sparsity": 0.0}  # fmt: skip
STORED = {"metadata": {"name": children.results_name("served")},
          "data": {f"compress-{V.version}": json.dumps(COMPRESSED)}}  # fmt: skip


@pytest.mark.parametrize("found", [ROUND_MODEL, RoundProblem(rounds.ROUND_NOT_FOUND, "deleted since")])
def test_once_compressed_the_rounds_model_is_served_even_if_the_round_goes(found: RoundModel | RoundProblem) -> None:
    decision = decide(snapshot(found, results=STORED))

    assert decision.outcome.phase == "Deploying" and not decision.ledger and decision.train is None
    assert not decision.create  # compressed once: the round's volume is not read again
    (deployment,) = [obj for obj in decision.apply if obj["kind"] == "Deployment"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    assert args[args.index("--artifact-digest") + 1] == COMPRESSED["digest"]
    assert decision.outcome.fields["model"]["compressedAccuracy"] == 0.89
    assert _conditions(decision)["Trained"].reason == "TrainedByFederatedRound"
    assert decision.outcome.fields["privacy"]["federatedRound"] == "fl"
