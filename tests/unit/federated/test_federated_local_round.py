"""A whole round on Flower's deployment engine: SuperLink + SuperNodes as local processes, TLS, SuperNode
authentication, SecAgg+, the pods' own commands (securemodel.workers.federated.local); a silo killed mid-round;
the accuracy measured by the aggregator on public data only."""

import hashlib
import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from securemodel.crypto.artifacts import ArtifactBindingError, ArtifactTamperedError, read_artifact, read_data_key
from securemodel.data.loading import load_evaluation
from securemodel.models import ARTIFACT_KIND, ModelPredictor, ModelRecord, ModelSpec, build_model, load_record
from securemodel.workers.arguments import round_binding
from securemodel.workers.federated.local import LocalRound, LocalSilo, RoundOptions

pytestmark = pytest.mark.slow

STEPS = 3
TRAIN_MESSAGE = "Receiving: train message"
# SecAgg+ sends a silo four train messages per round; the third carries the global model and is
# where the silo trains (then masks its update).
TRAINING_STAGE = 3
# Long enough for a surviving silo to import torch and train on a loaded 2-core machine; a silo
# slower than this is dropped too (which the round then reports).
STAGE_TIMEOUT = 240
PUBLIC = "builtin://breast_cancer?part=evaluation"


def clinics() -> list[LocalSilo]:
    return [
        LocalSilo(f"clinic-{c}", f"builtin://breast_cancer?shard={i}&of=3", 1.0, 0.2, STEPS, 1)
        for i, c in enumerate("abc")
    ]


def kill_when_training(federation: LocalRound, name: str, timeout: float = 400.0) -> threading.Thread:
    """Kill silo ``name`` (its whole pod) as soon as it receives the message it trains on."""

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(TRAIN_MESSAGE in line for line in federation.silo_lines(name)) >= TRAINING_STAGE:
                federation.kill_silo(name)
                return
            time.sleep(0.1)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_round_survives_a_dropped_silo_and_writes_the_encrypted_global_model(
    tmp_path: Path, initial_record: ModelRecord
) -> None:
    options = RoundOptions(min_clients=2, threshold=2, stage_timeout=STAGE_TIMEOUT, timeout=900,
                           evaluation_source=PUBLIC)  # fmt: skip
    with LocalRound(tmp_path, clinics(), initial_record, options) as federation:
        killer = kill_when_training(federation, "clinic-c")
        result = federation.wait(1000)
        killer.join(1)
        federation.stop_silos()
        reports = {s: federation.silo_report(s) for s in ("clinic-a", "clinic-b")}
    assert result["status"] == "Succeeded", result.get("error")
    assert result["flowerStatus"] == "finished:completed"
    (history,) = result["history"]
    assert history["submitted"] == ["clinic-a", "clinic-b"]
    assert history["dropped"] == ["clinic-c"]
    assert (result["evaluationSource"], result["evaluationExamples"]) == (PUBLIC, 113)
    assert result["silos"]["clinic-c"] == {"roundsSubmitted": 0, "steps": 0}
    assert result["silos"]["clinic-a"] == {"roundsSubmitted": 1, "steps": STEPS}
    for report in reports.values():
        assert report["status"] == "Stopped" and report["steps"] == STEPS and report["roundsTrained"] == 1

    artifact = Path(result["artifact"])
    assert result["digest"] == "sha256:" + hashlib.sha256(artifact.read_bytes()).hexdigest()
    round_key = read_data_key(federation.round_key_file)
    final = round_binding(federation.uid, 1)
    record = load_record(read_artifact(artifact, round_key, kind=ARTIFACT_KIND, binding=final))
    assert record.info["federated"]["submitted"] == ["clinic-a", "clinic-b"]
    # bound to this round and its round number: a reader expecting another round number or round refuses it
    for uid, number in ((federation.uid, 2), (federation.initial_uid, 1)):
        with pytest.raises(ArtifactBindingError):
            read_artifact(artifact, round_key, kind=ARTIFACT_KIND, binding=round_binding(uid, number))
    # the accuracy is the global model's on all of the public evaluation part, measured by the aggregator
    x, y = load_evaluation(PUBLIC, training="builtin://breast_cancer")
    assert history["accuracy"] == result["accuracy"] == ModelPredictor(record, "m").accuracy(x, y)
    assert list(record.state) == list(initial_record.state)
    assert record.standardization is not None
    with pytest.raises(ArtifactTamperedError):
        read_artifact(artifact, read_data_key(federation.initial_key_file), kind=ARTIFACT_KIND,
                      binding=round_binding(federation.uid, 1))  # fmt: skip
    assert b"clinic" not in artifact.read_bytes()  # nothing readable without the key


def test_round_fails_clearly_when_survivors_are_fewer_than_min_clients(
    tmp_path: Path, initial_record: ModelRecord
) -> None:
    options = RoundOptions(min_clients=3, threshold=2, stage_timeout=STAGE_TIMEOUT, timeout=900)
    with LocalRound(tmp_path, clinics(), initial_record, options) as federation:
        kill_when_training(federation, "clinic-c")
        result = federation.wait(1000)
    assert result["status"] == "Failed"
    assert result["flowerStatus"] == "finished:failed"
    error = result["error"]
    dropped = r"round 1 failed: [12] of 3 silos dropped: .*clinic-c \(no answer in stage 'collect masked vectors'\)"
    assert re.search(dropped, error), error
    needs = r"[12] remain, but SecAgg\+ needs 2 survivors to unmask the sum and min-clients is 3$"
    assert re.search(needs, error), error
    assert result["roundsCompleted"] == 0
    assert "ccuracy" not in json.dumps(result)  # no evaluation source: nothing is evaluated, by anyone
    assert not list(federation.output_dir.glob("round-*.model"))


def test_the_rounds_accuracy_is_the_aggregators_on_public_data_never_the_silos(tmp_path: Path) -> None:
    """Two silos train on private files; the public file labels by the OPPOSITE rule. An accuracy computed
    from any silo's records would be high; the round reports the global model's low accuracy on the public
    file, which only the aggregator reads."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(700, 5)).astype(np.float32)
    rule = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    schema = {"label": {"classes": ["negative", "positive"]}}
    for i, name in enumerate(("clinic-a", "clinic-b")):
        (tmp_path / name / "data").mkdir(parents=True)
        np.savez(tmp_path / name / "data" / "private.npz", x=x[300 * i:300 * (i + 1)], y=rule[300 * i:300 * (i + 1)])
    (tmp_path / "public").mkdir()
    np.savez(tmp_path / "public" / "public.npz", x=x[600:], y=1 - rule[600:])
    silos = [LocalSilo(name, f"pvc://{name}-data/private.npz", 1.0, 0.2, 60, 1, samples=300, schema=schema,
                       data_root=tmp_path / name / "data") for name in ("clinic-a", "clinic-b")]  # fmt: skip
    torch.manual_seed(0)
    spec = ModelSpec("mlp", None, {"hidden": [16]})
    initial = ModelRecord.from_module(spec, build_model(spec, (5,), 2), (5,), 2, None)
    options = RoundOptions(min_clients=2, threshold=2, stage_timeout=STAGE_TIMEOUT, timeout=900, learning_rate=0.5,
                           evaluation_source="pvc://public-data/public.npz", evaluation_samples=100,
                           evaluation_root=tmp_path / "public", schema=schema)  # fmt: skip
    with LocalRound(tmp_path / "round", silos, initial, options) as federation:
        result = federation.wait(1000)
    assert result["status"] == "Succeeded", result.get("error")
    record = load_record(read_artifact(Path(result["artifact"]), read_data_key(federation.round_key_file),
                                       kind=ARTIFACT_KIND, binding=round_binding(federation.uid, 1)))  # fmt: skip
    predictor = ModelPredictor(record, "m")
    assert predictor.accuracy(x[:600], rule[:600]) > 0.8  # what an accuracy on the silos' records would show
    assert result["evaluationExamples"] == 100
    assert result["accuracy"] == result["history"][0]["accuracy"] == predictor.accuracy(x[600:], 1 - rule[600:]) < 0.2
