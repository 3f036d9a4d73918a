"""``securemodel-worker compress --from-round``: a FederatedRound's global model, and only that one, is compressed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from securemodel.crypto.artifacts import read_artifact, write_artifact
from securemodel.data.loading import load_evaluation
from securemodel.models import ARTIFACT_KIND, dump_fp32, load_predictor, load_record
from securemodel.workers import cli
from securemodel.workers.arguments import model_binding, round_binding
from securemodel.workers.federated.aggregate import fresh_model

torch.set_num_threads(1)

UID, TRAINING, VERSION = "0b6c1f9e-2d1a-4c1e-9a53-5c0e0b7d2f11", "v1a2b3c4d", "v5e6f7a8b"
PUBLIC = "builtin://breast_cancer?part=evaluation"
SILOS = [f"builtin://breast_cancer?shard={i}&of=3" for i in range(3)]
ROUND_UID, ROUNDS = "5f0c2a1e-7b3d-4e8a-9c61-2d4b8e0f1a37", 3  # the FederatedRound served, and its spec.rounds


def _key(path: Path) -> Path:
    path.write_bytes(os.urandom(32))
    return path


def _round_model(path: Path, key: Path, number: int = ROUNDS, uid: str = ROUND_UID) -> str:
    """A round's global model after round ``number`` as the aggregator writes it: fp32, bound to the round's uid
    and ``number``, under the round's key."""
    record = fresh_model("mlp", {"hidden": [8]}, SILOS[0]).with_info(federated={"round": number, "rounds": ROUNDS})
    return write_artifact(path, dump_fp32(record), key.read_bytes(), kind=ARTIFACT_KIND,
                          binding=round_binding(uid, number))  # fmt: skip


def _compress(tmp_path: Path, capsys: pytest.CaptureFixture[str], source: Path, round_key: Path, digest: str,
              *extra: str) -> tuple[int, dict[str, Any]]:  # fmt: skip
    argv = ["compress", "--input", str(source), "--output", str(tmp_path / "small.enc"), "--quantization", "int8",
            "--from-round", "--input-key-file", str(round_key), "--input-round-uid", ROUND_UID,
            "--input-round", str(ROUNDS), "--input-digest", digest,
            *(arg for silo in SILOS for arg in ("--training-source", silo)),
            "--model-uid", UID, "--training-version", TRAINING, "--model-version", VERSION,
            "--data-key-file", str(tmp_path / "model.key"), "--termination-log", str(tmp_path / "log"), *extra]  # fmt: skip
    status = cli.main(argv)
    return status, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "log").touch()
    return _key(tmp_path / "round.key"), _key(tmp_path / "model.key")


def test_the_rounds_model_is_compressed_for_this_secure_model_and_evaluated_on_public_data(
    tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    round_key, model_key = keys
    digest = _round_model(tmp_path / "round-003.model", round_key)

    status, result = _compress(tmp_path, capsys, tmp_path / "round-003.model", round_key, digest,
                               "--evaluation-source", PUBLIC)  # fmt: skip

    assert status == 0, result
    assert (result["evaluationSource"], result["evaluationExamples"]) == (PUBLIC, 113)
    # the output is this SecureModel's compressed artifact, under its own key: what its serving pods read
    payload = read_artifact(tmp_path / "small.enc", model_key.read_bytes(), kind=ARTIFACT_KIND,
                            binding=model_binding(UID, TRAINING, "compressed", VERSION), digest=result["digest"])  # fmt: skip
    x, y = load_evaluation(PUBLIC, training=SILOS[0])
    assert load_predictor(payload, "m").accuracy(x, y) == result["compressedAccuracy"]
    assert load_record(payload).info["federated"]["round"] == ROUNDS


def test_an_earlier_rounds_model_of_the_same_run_is_refused_even_with_its_own_digest(
    tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """What someone who can edit the round's results ConfigMap could point the model at: round-001 of the same
    run, a genuine file under the round's key, with its genuine digest."""
    round_key, _ = keys
    earlier = _round_model(tmp_path / "round-001.model", round_key, number=1)

    status, result = _compress(tmp_path, capsys, tmp_path / "round-001.model", round_key, earlier)

    assert status == 1 and result["error"].startswith("ArtifactBindingError"), result
    assert "round: 1, expected 3" in result["error"]
    assert not (tmp_path / "small.enc").exists()


def test_another_rounds_final_model_under_the_same_key_is_refused(
    tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    round_key, _ = keys
    other = _round_model(tmp_path / "other.model", round_key, uid="c3e5a7b9-1d2f-4e6a-8c0b-5d7f9a1c3e46")

    status, result = _compress(tmp_path, capsys, tmp_path / "other.model", round_key, other)

    assert status == 1 and result["error"].startswith("ArtifactBindingError"), result
    assert not (tmp_path / "small.enc").exists()


def test_another_file_than_the_rounds_reported_model_is_refused(
    tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    round_key, _ = keys
    digest = _round_model(tmp_path / "round-003.model", round_key)
    _round_model(tmp_path / "again.model", round_key)  # bound as the round's final model too, another digest
    other_key = _key(tmp_path / "other.key")
    other_digest = _round_model(tmp_path / "other.model", other_key)  # another round's model, under its key

    for source, digest_expected in ((tmp_path / "again.model", digest), (tmp_path / "other.model", other_digest)):
        status, result = _compress(tmp_path, capsys, source, round_key, digest_expected)
        assert status == 1 and result["status"] == "Failed"
        assert not (tmp_path / "small.enc").exists()


def test_an_evaluation_source_that_may_hold_a_silos_records_is_refused(
    tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    round_key, _ = keys
    digest = _round_model(tmp_path / "round-003.model", round_key)
    status, result = _compress(tmp_path, capsys, tmp_path / "round-003.model", round_key, digest,
                               "--evaluation-source", "builtin://iris?part=evaluation")  # fmt: skip
    assert status == 1 and "cannot evaluate" in json.dumps(result)
    assert not (tmp_path / "small.enc").exists()
