"""``securemodel-worker train``: the seed fixes the start (initial weights, split), never DP-SGD's sampling or noise."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from securemodel.crypto.artifacts import read_artifact
from securemodel.models import ARTIFACT_KIND, load_record
from securemodel.workers import cli
from securemodel.workers import train as train_module
from securemodel.workers.arguments import model_binding

torch.set_num_threads(1)  # the unit tests share two cores with everything else

DP = ["--noise-multiplier", "2.63", "--sample-rate", str(64 / 456), "--steps", "5", "--max-grad-norm", "1.0"]


def test_identical_arguments_and_seed_start_alike_and_end_differently(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "data-key"
    key_file.write_bytes(key := os.urandom(32))
    starts: list[tuple[dict[str, torch.Tensor], np.ndarray, np.ndarray]] = []
    real = train_module.train_dp_sgd

    def observed(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        starts.append(({k: v.clone() for k, v in model.state_dict().items()}, x.copy(), y.copy()))
        return real(model, x, y, *args, **kwargs)

    monkeypatch.setattr(train_module, "train_dp_sgd", observed)
    results, payloads = [], []
    for name in ("a.enc", "b.enc"):
        argv = ["train", "--architecture", "mlp", "--data-source", "builtin://breast_cancer", "--seed", "7", *DP,
                "--output", str(tmp_path / name), "--data-key-file", str(key_file), "--model-uid", "u1",
                "--training-version", "v1"]  # fmt: skip
        assert cli.main(argv) == 0
        results.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
        payloads.append(read_artifact(tmp_path / name, key, kind=ARTIFACT_KIND, binding=model_binding("u1", "v1", "fp32")))

    (state_a, x_a, y_a), (state_b, x_b, y_b) = starts
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)  # same initialisation ...
    assert np.array_equal(x_a, x_b) and np.array_equal(y_a, y_b)  # ... and the same training split
    final_a, final_b = (load_record(p).state for p in payloads)
    assert not any(np.array_equal(final_a[k], final_b[k]) for k in final_a)  # but secret batches and noise
    assert payloads[0] != payloads[1] and results[0]["digest"] != results[1]["digest"]
    assert results[0]["clippingMode"] == "bookkeeping"
    # nothing of the secret source is reported: the result holds the operator's parameters and counts only
    assert not {"seed", "noiseSeed", "key"} & set(results[0])
