"""Fine-tuning (``spec.model.from`` and ``fineTune``): which weights the train pod starts from, how it reads them,
and that nothing is claimed while they are not available."""

from __future__ import annotations

import json
from typing import Any

import pytest

from securemodel.operator.conditions import Progress
from securemodel.operator.secure_model import children, rounds, starts
from securemodel.operator.secure_model.decide import Verb, decide
from securemodel.operator.secure_model.spec import parse
from securemodel.operator.secure_model.starts import InitArtifact, InitFile, InitProblem
from securemodel.privacy import Claim, ClaimState, Consumer, Ledger
from securemodel.workers.arguments import model_binding, round_binding
from test_operator_decide import RAW, SPEC, snapshot

DIGEST = "sha256:" + "12" * 32
SOURCE_TRAINING = "v0a0b0c0d"


def deployment(training: str | None) -> dict[str, Any]:
    labels = {children.TRAINING_LABEL: training} if training else {}
    return {"metadata": {"name": "public", "labels": labels}}


def results(**result: Any) -> dict[str, Any]:
    return {"metadata": {"name": "public-results"}, "data": {f"train-{SOURCE_TRAINING}": json.dumps(result)}}


# --- which weights ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uid", "served", "stored", "reason"),
    [
        (None, None, None, starts.SOURCE_NOT_FOUND),
        ("uid-p", None, None, starts.SOURCE_NOT_READY),  # it serves no version yet
        ("uid-p", deployment(SOURCE_TRAINING), None, starts.SOURCE_NOT_READY),  # its train report is gone
        ("uid-p", deployment(SOURCE_TRAINING), results(status="Failed", digest=DIGEST), starts.SOURCE_NOT_READY),
    ],
)
def test_a_source_model_without_an_authenticable_trained_artifact_is_not_used(uid: Any, served: Any, stored: Any,
                                                                             reason: str) -> None:  # fmt: skip
    found = starts.from_secure_model("m", "public", uid, served, stored)
    assert isinstance(found, InitProblem) and found.reason == reason


def test_a_model_cannot_start_from_itself() -> None:
    found = starts.from_secure_model("m", "m", "uid-m", deployment(SOURCE_TRAINING), results(status="Succeeded", digest=DIGEST))
    assert isinstance(found, InitProblem) and found.reason == starts.SOURCE_INVALID


def test_a_source_model_gives_its_served_versions_trained_artifact_bound_to_it() -> None:
    found = starts.from_secure_model("m", "public", "uid-p", deployment(SOURCE_TRAINING),
                                     results(status="Succeeded", digest=DIGEST))  # fmt: skip
    assert found == InitArtifact(
        claim="public-artifacts", path=f"/artifacts/{SOURCE_TRAINING}/model.smdl", key_secret="public-data-key",
        binding=json.dumps(model_binding("uid-p", SOURCE_TRAINING, "fp32"), sort_keys=True, separators=(",", ":")),
        digest=DIGEST, describe=f"SecureModel public's trained model of version {SOURCE_TRAINING}",
    )  # fmt: skip


def test_a_round_gives_its_final_global_model_bound_to_its_uid_and_rounds_and_its_problems_carry_over() -> None:
    model = rounds.RoundModel("fl", "uid-fl", "/artifacts/round-003.model", DIGEST, ("builtin://iris",), 1.0, 1e-5, 3)
    found = starts.from_round(model)
    assert isinstance(found, InitArtifact)
    assert (found.claim, found.key_secret, found.digest) == ("fl-artifacts", "fl-data-key", DIGEST)
    assert json.loads(found.binding) == round_binding("uid-fl", 3) == {"uid": "uid-fl", "round": "3"}
    waiting = starts.from_round(rounds.RoundProblem(rounds.WAITING_FOR_ROUND, "running"))
    assert waiting == InitProblem(rounds.WAITING_FOR_ROUND, "running")


def test_the_train_pod_mounts_the_source_read_only_and_gets_the_worker_flags() -> None:
    spec = parse({**RAW, "model": {"architecture": "mlp", "from": {"secureModelRef": "public"},
                                   "fineTune": {"freeze": ["net.2", "net.0"],
                                                "lora": {"rank": 4, "alpha": 8, "targetModules": ["net.0"]}}}})  # fmt: skip
    artifact = starts.from_secure_model("m", "public", "uid-p", deployment(SOURCE_TRAINING),
                                        results(status="Succeeded", digest=DIGEST))  # fmt: skip
    assert isinstance(artifact, InitArtifact)
    parts = starts.train_parts(artifact, spec.model.fine_tune)
    assert list(parts.args) == [
        "--init-artifact", f"/init/{SOURCE_TRAINING}/model.smdl", "--init-key-file", "/var/run/securemodel/init-key/data.key",
        "--init-binding", artifact.binding, "--init-digest", DIGEST, "--freeze", "net.0,net.2",
        "--lora-rank", "4", "--lora-alpha", "8.0", "--lora-targets", "net.0",
    ]  # fmt: skip
    assert {m["name"]: m["readOnly"] for m in parts.mounts} == {"init": True, "init-key": True}
    assert parts.volumes[0]["persistentVolumeClaim"] == {"claimName": "public-artifacts", "readOnly": True}
    plain = starts.train_parts(starts.from_file("pvc://weights/pretrained/mlp.pt"), None)
    assert list(plain.args) == ["--init-file", "/init/pretrained/mlp.pt"]
    assert [v["name"] for v in plain.volumes] == ["init"]  # no key: the file is public


def test_the_source_and_fine_tuning_are_part_of_the_training_version_only_when_set() -> None:
    tuned = parse({**RAW, "model": {"architecture": "mlp", "from": {"file": "pvc://w/a.pt"}}})
    assert tuned.versions.training != SPEC.versions.training
    assert parse({**RAW, "model": {"architecture": "mlp", "from": {"file": "pvc://w/b.pt"}}}).versions != tuned.versions
    # a model without from keeps the version it had before fine-tuning existed
    assert parse(RAW).versions == SPEC.versions


# --- the decision ----------------------------------------------------------------------------------


FINE_TUNED = parse({**RAW, "model": {"architecture": "mlp", "from": {"federatedRoundRef": "fl"},
                                     "fineTune": {"freeze": ["net.0"]}}})  # fmt: skip
START = InitArtifact("fl-artifacts", "/artifacts/round-003.model", "fl-data-key", '{"round":"3","uid":"uid-fl"}', DIGEST,
                     "the round's model")  # fmt: skip


def test_nothing_is_claimed_while_the_starting_weights_are_missing() -> None:
    decision = decide(snapshot(spec=FINE_TUNED, start=InitProblem(rounds.WAITING_FOR_ROUND, "FederatedRound fl runs")))
    assert decision.outcome is not None
    assert (decision.outcome.phase, decision.outcome.ready.reason) == ("WaitingForSource", rounds.WAITING_FOR_ROUND)
    assert decision.outcome.progress is Progress.WORKING
    assert not decision.ledger and decision.train is None


def test_a_granted_fine_tuning_trains_from_the_source() -> None:
    consumer = Consumer("SecureModel", "clinic", "m", "uid-m", FINE_TUNED.versions.training)
    reserved = Ledger((Claim(consumer, 2.0, 1e-5, ClaimState.RESERVED, "t0"),))
    decision = decide(snapshot(spec=FINE_TUNED, start=START, ledger=reserved))
    assert [a.verb for a in decision.ledger] == [Verb.DISPATCH]
    assert decision.train is not None
    pod = decision.train[1]()["spec"]["template"]["spec"]
    args = pod["containers"][0]["command"]
    assert args[args.index("--init-artifact") + 1] == "/init/round-003.model"
    assert args[args.index("--init-digest") + 1] == DIGEST and args[args.index("--freeze") + 1] == "net.0"
    assert {v["name"] for v in pod["volumes"]} >= {"init", "init-key"}
    # the source going away after the grant: the claim is kept, no pod is made
    gone = decide(snapshot(spec=FINE_TUNED, start=InitProblem(starts.SOURCE_NOT_FOUND, "gone"), ledger=reserved))
    assert gone.outcome is not None and gone.train is None and not gone.ledger
    assert "waiting for the starting weights: gone" in gone.outcome.ready.message


# --- what wakes the model --------------------------------------------------------------------------


def test_a_model_wakes_on_its_budget_and_on_the_weights_or_round_it_builds_on() -> None:
    from securemodel.operator.budget.handlers import budget_key, namespace_budgets_key
    from securemodel.operator.budget.ledger import BudgetRef
    from securemodel.operator.federated.handlers import start_key
    from securemodel.operator.secure_model.handlers import _wake_keys, model_key, source_key

    def keys(spec: dict[str, Any]) -> list[Any]:
        return _wake_keys({"spec": spec, "metadata": {"namespace": "ns"}}, "uid")  # type: ignore[arg-type]

    trained = {"model": {"architecture": "mlp", "from": {"secureModelRef": "public"}}, "privacy": {"budgetRef": "b"}}
    # a source model's data may come to be protected by any budget of the namespace (a public source's)
    assert keys(trained) == [model_key("uid"), budget_key(BudgetRef("ns", "b")), source_key("ns", "public"),
                             namespace_budgets_key("ns")]  # fmt: skip
    # a public model watches every budget of its namespace: any of them may come to protect its data
    assert keys({"model": {"architecture": "mlp"}, "privacy": {"public": True}}) == [model_key("uid"),
                                                                                    namespace_budgets_key("ns")]  # fmt: skip
    tuned = {**trained, "model": {"architecture": "mlp", "from": {"federatedRoundRef": "fl"}}}
    assert keys(tuned)[-1] == start_key("FederatedRound", "ns", "fl")
    assert keys({"model": {"fromRound": "fl"}}) == [model_key("uid"), start_key("FederatedRound", "ns", "fl")]
