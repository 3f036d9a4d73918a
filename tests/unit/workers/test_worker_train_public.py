"""``securemodel-worker train --public``: training without differential privacy, in the artifact format of DP-SGD."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from securemodel.crypto.artifacts import read_artifact
from securemodel.data.loading import load_evaluation
from securemodel.models import ARTIFACT_KIND, ModelPredictor, load_record
from securemodel.workers import cli
from securemodel.workers import train as train_module
from securemodel.workers.arguments import model_binding

torch.set_num_threads(1)  # the unit tests share two cores with everything else

UID, TRAINING = "5d1c7e2a-0f3b-4a8e-9c61-2b7f4e9d0a13", "v0pub1ic"
BASE = ["train", "--architecture", "mlp", "--params", '{"hidden": [16]}', "--data-source", "builtin://breast_cancer",
        "--model-uid", UID, "--training-version", TRAINING, "--learning-rate", "0.05", "--optimizer", "adam"]  # fmt: skip
PUBLIC = ["--public", "--epochs", "5", "--batch-size", "32"]


def run(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict[str, Any], bytes]:
    key = os.urandom(32)
    (tmp_path / "key").write_bytes(key)
    status = cli.main([*BASE, *extra, "--output", str(tmp_path / "model.smdl"), "--data-key-file",
                       str(tmp_path / "key"), "--termination-log", str(tmp_path / "log")])  # fmt: skip
    return status, json.loads(capsys.readouterr().out.strip().splitlines()[-1]), key


def test_a_public_training_reports_no_privacy_parameters_and_writes_a_bound_artifact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_dp_sgd(*_: Any, **__: Any) -> Any:
        raise AssertionError("--public must not run DP-SGD")

    monkeypatch.setattr(train_module, "train_dp_sgd", no_dp_sgd)
    status, result, key = run(tmp_path, capsys, *PUBLIC)

    assert status == 0, result
    assert result["status"] == "Succeeded" and result["public"] is True and result["dataTouched"] is True
    # 456 training examples in batches of 32: 15 steps an epoch
    assert (result["epochs"], result["batchSize"], result["steps"], result["trainExamples"]) == (5, 32, 75, 456)
    assert not {"noiseMultiplier", "sampleRate", "maxGradNorm", "epsilon", "stepsRequested"} & set(result)
    payload = read_artifact(tmp_path / "model.smdl", key, kind=ARTIFACT_KIND, binding=model_binding(UID, TRAINING, "fp32"))
    record = load_record(payload)
    assert record.info["training"]["public"] is True and "noiseMultiplier" not in record.info["training"]
    # it learned: plain Adam on public data beats the majority class (63 %) of the public evaluation part by far
    x, y = load_evaluation("builtin://breast_cancer?part=evaluation", training="builtin://breast_cancer")
    accuracy = ModelPredictor(record, "m").accuracy(x, y)
    assert accuracy is not None and accuracy > 0.85


def test_a_public_training_that_fails_still_reports_its_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, result, _ = run(tmp_path, capsys, *PUBLIC, "--data-source", "builtin://breast_cancer?shard=5&of=2")
    assert status == 1 and result["status"] == "Failed" and result["public"] is True and result["steps"] == 0
