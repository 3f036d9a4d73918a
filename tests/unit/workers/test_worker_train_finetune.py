"""``securemodel-worker train`` from starting weights: encrypted artifacts and public files, frozen layers, LoRA."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from securemodel.crypto.artifacts import read_artifact, write_artifact
from securemodel.models import ARTIFACT_KIND, ModelSpec, build_model, load_record
from securemodel.workers import cli
from securemodel.workers import train as train_module
from securemodel.workers.arguments import model_binding, round_binding

torch.set_num_threads(1)  # the unit tests share two cores with everything else

DP = ["--noise-multiplier", "2.0", "--sample-rate", str(64 / 456), "--steps", "6", "--max-grad-norm", "1.0"]
MLP = ["--architecture", "mlp", "--params", '{"hidden": [16]}']
SOURCE = ["--data-source", "builtin://breast_cancer"]
PUBLIC = model_binding("public-uid", "v0", "fp32")
PLAIN_KEYS = ["1.weight", "1.bias", "3.weight", "3.bias"]  # Flatten, Linear, ReLU, Linear


class Worker:
    """Runs ``securemodel-worker train`` in a directory holding one data key; records the weights training starts from."""

    def __init__(self, root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
        self.root, self.capsys = root, capsys
        self.key_file = root / "data-key"
        self.key_file.write_bytes(os.urandom(32))
        self.starts: list[dict[str, torch.Tensor]] = []
        real = train_module.train_dp_sgd

        def observed(model: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
            self.starts.append({k: v.clone() for k, v in model.state_dict().items()})
            return real(model, *args, **kwargs)

        monkeypatch.setattr(train_module, "train_dp_sgd", observed)

    def train(self, output: str, *extra: str, uid: str = "u1", training: str = "v1") -> tuple[int, dict[str, Any]]:
        model = [] if "--entrypoint" in extra else MLP
        argv = ["train", *model, *SOURCE, *DP, "--output", str(self.root / output), "--data-key-file", str(self.key_file),
                "--model-uid", uid, "--training-version", training, *extra]  # fmt: skip
        status = cli.main(argv)
        return status, json.loads(self.capsys.readouterr().out.strip().splitlines()[-1])

    def state(self, output: str, uid: str = "u1", training: str = "v1") -> dict[str, np.ndarray]:
        payload = read_artifact(
            self.root / output, self.key_file.read_bytes(), kind=ARTIFACT_KIND, binding=model_binding(uid, training, "fp32")
        )
        return load_record(payload).state

    def init_flags(self, output: str, binding: dict[str, str] = PUBLIC) -> list[str]:
        return ["--init-artifact", str(self.root / output), "--init-key-file", str(self.key_file),
                "--init-binding", json.dumps(binding)]  # fmt: skip


@pytest.fixture
def worker(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Worker:
    return Worker(tmp_path, capsys, monkeypatch)


@pytest.fixture
def public(worker: Worker) -> dict[str, Any]:
    """A model trained first (the 'public' one) whose fp32 artifact later runs start from."""
    status, result = worker.train("public.model", uid="public-uid", training="v0")
    assert status == 0, result
    return result


def test_init_from_an_encrypted_artifact_round_trips(worker: Worker, public: dict[str, Any]) -> None:
    status, result = worker.train("tuned.model", *worker.init_flags("public.model"), "--init-digest", public["digest"])
    assert status == 0, result
    start = worker.starts[-1]
    pretrained = worker.state("public.model", "public-uid", "v0")
    assert all(np.array_equal(start[k].numpy(), pretrained[k]) for k in pretrained)
    assert result["init"] == {"kind": "artifact", "digest": public["digest"], "binding": PUBLIC}
    assert (result["trainableParameters"], result["frozenParameters"], result["lora"]) == (30 * 16 + 16 + 16 * 2 + 2, 0, None)
    assert public["init"] is None and public["frozen"] == []


def test_init_from_an_artifact_of_another_binding_fails_before_data_is_read(
    worker: Worker, public: dict[str, Any]
) -> None:
    wrong = {**PUBLIC, "training": "v9"}
    status, result = worker.train("tuned.model", *worker.init_flags("public.model", wrong))
    assert status == 1
    assert result["error"].startswith("ArtifactBindingError") and "training: v0, expected v9" in result["error"]
    assert (result["dataTouched"], result["steps"]) == (False, 0)
    assert not (worker.root / "tuned.model").exists()


def test_init_with_another_digest_or_without_its_key_fails(worker: Worker, public: dict[str, Any]) -> None:
    status, result = worker.train("tuned.model", *worker.init_flags("public.model"), "--init-digest", "sha256:" + "0" * 64)
    assert status == 1 and result["error"].startswith("ArtifactDigestError") and not result["dataTouched"]
    status, result = worker.train("tuned.model", *worker.init_flags("public.model")[:-2])
    assert status == 1 and result["error"] == "InitModelError: --init-artifact needs --init-key-file and --init-binding"


def test_frozen_layers_come_out_bit_identical(worker: Worker, public: dict[str, Any]) -> None:
    status, result = worker.train("tuned.model", *worker.init_flags("public.model"), "--freeze", "1")
    assert status == 0, result
    pretrained, tuned = worker.state("public.model", "public-uid", "v0"), worker.state("tuned.model")
    assert np.array_equal(pretrained["1.weight"], tuned["1.weight"]) and np.array_equal(pretrained["1.bias"], tuned["1.bias"])
    assert not np.array_equal(pretrained["3.weight"], tuned["3.weight"])
    assert (result["trainableParameters"], result["frozenParameters"]) == (16 * 2 + 2, 30 * 16 + 16)
    assert result["frozen"] == ["1"]


def test_lora_writes_the_plain_architecture_with_merged_adapters(worker: Worker, public: dict[str, Any]) -> None:
    lora = ["--lora-rank", "2", "--lora-alpha", "4", "--lora-targets", "1"]
    status, result = worker.train("tuned.model", *worker.init_flags("public.model"), *lora, "--freeze", "3.bias")
    assert status == 0, result
    assert result["lora"] == {"rank": 2, "alpha": 4.0, "targets": ["1"], "merged": True}
    assert result["clippingMode"] == "bookkeeping"
    assert (result["trainableParameters"], result["frozenParameters"]) == (2 * 30 + 16 * 2 + 16 * 2, 30 * 16 + 16 + 2)
    pretrained, tuned = worker.state("public.model", "public-uid", "v0"), worker.state("tuned.model")
    assert list(tuned) == PLAIN_KEYS
    delta = tuned["1.weight"] - pretrained["1.weight"]
    assert 0 < np.linalg.matrix_rank(delta, tol=1e-6) <= 2  # the merged adapter: a rank-2 change
    assert np.array_equal(tuned["1.bias"], pretrained["1.bias"]) and np.array_equal(tuned["3.bias"], pretrained["3.bias"])
    model = build_model(ModelSpec("mlp", params={"hidden": [16]}), (30,), 2)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in tuned.items()}, strict=True)


def test_init_from_a_public_state_dict_file(worker: Worker, tmp_path: Path) -> None:
    torch.manual_seed(3)
    state = build_model(ModelSpec("mlp", params={"hidden": [16]}), (30,), 2).state_dict()
    torch.save(state, tmp_path / "public.pt")
    status, result = worker.train("tuned.model", "--init-file", str(tmp_path / "public.pt"))
    assert status == 0, result
    assert all(torch.equal(worker.starts[-1][k], state[k]) for k in state)
    assert result["init"]["kind"] == "file" and result["init"]["digest"].startswith("sha256:")


def test_an_architecture_mismatch_names_the_first_differing_parameter(worker: Worker, tmp_path: Path) -> None:
    state = build_model(ModelSpec("mlp", params={"hidden": [16]}), (30,), 3).state_dict()  # 3 classes, not 2
    torch.save(state, tmp_path / "other.pt")
    status, result = worker.train("tuned.model", "--init-file", str(tmp_path / "other.pt"))
    assert status == 1 and (result["steps"], result["dataTouched"]) == (0, True)
    assert result["error"] == (
        "InitModelError: architecture mismatch: parameter '3.weight' has shape [3, 16] in the init model, [2, 16] in the model"
    )
    torch.save({**state, "3.weight": state["3.weight"][:2], "3.bias": state["3.bias"][:2], "9.weight": state["1.bias"]},
               tmp_path / "extra.pt")  # fmt: skip
    status, result = worker.train("tuned.model", "--init-file", str(tmp_path / "extra.pt"))
    assert result["error"] == "InitModelError: architecture mismatch: the init model has '9.weight', which the model does not"


def test_an_artifact_of_another_architecture_is_refused(worker: Worker) -> None:
    status, result = worker.train("wide.model", "--params", '{"hidden": [32]}', uid="public-uid", training="v0")
    assert status == 0, result
    status, result = worker.train("tuned.model", *worker.init_flags("wide.model"))
    assert status == 1 and result["error"] == (
        "InitModelError: architecture mismatch: the init model is mlp with params {'hidden': [32]}, "
        "the model mlp with params {'hidden': [16]}"
    )


def test_a_plain_file_is_never_unpickled(worker: Worker, tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    torch.save({"1.weight": Payload()}, tmp_path / "evil.pt")
    status, result = worker.train("tuned.model", "--init-file", str(tmp_path / "evil.pt"))
    assert status == 1 and result["error"].startswith("InitModelError") and not result["dataTouched"]
    assert not (tmp_path / "pwned").exists()


def test_unknown_freeze_prefixes_and_incomplete_lora_are_refused(worker: Worker) -> None:
    status, result = worker.train("tuned.model", "--freeze", "1,7")
    assert status == 1 and result["steps"] == 0 and result["error"] == (
        "FreezeError: unknown prefix '7': no parameter of the model is named '7' or starts with '7.'"
    )
    status, result = worker.train("tuned.model", "--lora-rank", "2")
    assert status == 1 and not result["dataTouched"]
    assert result["error"] == "LoraError: --lora-rank, --lora-alpha and --lora-targets go together"


def test_a_rounds_final_global_model_is_read_and_an_earlier_rounds_is_refused(
    worker: Worker, public: dict[str, Any]
) -> None:
    """A FederatedRound of 3 rounds: the train pod expects its uid and round 3 (--init-binding); round-001 of the
    same run, under the same key and with its own genuine digest, is refused before any data is read."""
    key = worker.key_file.read_bytes()
    payload = read_artifact(worker.root / "public.model", key, kind=ARTIFACT_KIND, binding=PUBLIC)
    digests = {n: write_artifact(worker.root / f"round-00{n}.model", payload, key, kind=ARTIFACT_KIND,
                                 binding=round_binding("round-uid", n)) for n in (1, 3)}  # fmt: skip
    final = round_binding("round-uid", 3)

    early = worker.init_flags("round-001.model", final)
    status, result = worker.train("early.model", *early, "--init-digest", digests[1])
    assert status == 1 and result["error"].startswith("ArtifactBindingError"), result
    assert "round: 1, expected 3" in result["error"]
    assert (result["dataTouched"], result["steps"]) == (False, 0)

    status, result = worker.train("tuned.model", *worker.init_flags("round-003.model", final), "--init-digest",
                                  digests[3])  # fmt: skip
    assert status == 0, result
    assert result["init"]["binding"] == final


def test_lora_is_refused_next_to_parameters_only_opacus_hooks_could_clip(
    worker: Worker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "scaled_models.py").write_text(
        "import torch\n"
        "from torch import nn\n\n"
        "class Scaled(nn.Module):\n"
        "    def __init__(self, features, classes):\n"
        "        super().__init__()\n"
        "        self.body, self.scale = nn.Linear(features, classes), nn.Parameter(torch.ones(classes))\n\n"
        "    def forward(self, x):\n"
        "        return self.body(x) * self.scale\n\n"
        "def build(input_shape, num_classes):\n"
        "    return Scaled(input_shape[0], num_classes)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    lora = ["--lora-rank", "2", "--lora-alpha", "2", "--lora-targets", "body"]
    status, result = worker.train("tuned.model", "--entrypoint", "scaled_models:build", "--params", "{}", *lora)
    assert status == 1 and result["steps"] == 0
    assert result["error"].startswith("LoraError: LoRA needs book-keeping clipping, which does not support: model (Scaled)")
