"""A whole round on Flower's deployment engine: SuperLink + 3 SuperNodes as local processes, TLS, SuperNode
authentication, SecAgg+, the pods' own commands (securemodel.workers.federated.local); a silo killed mid-round."""

import hashlib
import re
import threading
import time
from pathlib import Path

import pytest

from securemodel.crypto.artifacts import ArtifactTamperedError, read_artifact, read_data_key
from securemodel.models import ARTIFACT_KIND, ModelRecord, load_record
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
    options = RoundOptions(min_clients=2, threshold=2, stage_timeout=STAGE_TIMEOUT, timeout=900)
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
    assert 0.0 <= history["accuracy"] <= 1.0
    assert result["silos"]["clinic-c"] == {"roundsSubmitted": 0, "steps": 0}
    assert result["silos"]["clinic-a"] == {"roundsSubmitted": 1, "steps": STEPS}
    for report in reports.values():
        assert report["status"] == "Stopped" and report["steps"] == STEPS and report["roundsTrained"] == 1

    artifact = Path(result["artifact"])
    assert result["digest"] == "sha256:" + hashlib.sha256(artifact.read_bytes()).hexdigest()
    record = load_record(read_artifact(artifact, read_data_key(federation.round_key_file), kind=ARTIFACT_KIND))
    assert record.info["federated"]["submitted"] == ["clinic-a", "clinic-b"]
    assert list(record.state) == list(initial_record.state)
    assert record.standardization is not None
    with pytest.raises(ArtifactTamperedError):
        read_artifact(artifact, read_data_key(federation.initial_key_file), kind=ARTIFACT_KIND)
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
    assert not list(federation.output_dir.glob("round-*.model"))
