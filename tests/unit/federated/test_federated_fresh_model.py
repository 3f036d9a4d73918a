"""The aggregator's fresh starting model: sized from public metadata exactly as the silos load their data."""

import argparse
from pathlib import Path

import numpy as np
import pytest

from securemodel.crypto.artifacts import new_data_key, read_artifact
from securemodel.data.loading import load_dataset
from securemodel.models import ARTIFACT_KIND, load_record
from securemodel.workers.arguments import round_binding
from securemodel.workers.federated.aggregate import AggregationError, fresh_model, starting_model

UID = "5f0c2a1e-7b3d-4e8a-9c61-2d4b8e0f1a37"


@pytest.mark.parametrize("source", ["builtin://breast_cancer?shard=1&of=3", "builtin://digits", "builtin://iris"])
def test_fresh_model_matches_what_the_silos_load(source: str) -> None:
    record = fresh_model("mlp", {"hidden": [4]}, source)
    data = load_dataset(source)
    assert record.input_shape == data.input_shape and record.num_classes == data.num_classes
    assert data.standardization is not None and record.standardization is not None
    np.testing.assert_array_equal(record.standardization.mean, data.standardization.mean)
    np.testing.assert_array_equal(record.standardization.scale, data.standardization.scale)


def test_fresh_model_refuses_a_source_without_published_bounds() -> None:
    with pytest.raises(AggregationError):
        fresh_model("mlp", {}, "pvc://claim/x.csv")


def test_the_fresh_model_is_written_under_the_rounds_key_as_its_round_0(tmp_path: Path) -> None:
    key = tmp_path / "data.key"
    key.write_bytes(new_data_key())
    args = argparse.Namespace(initial_model=None, initial_model_key_file=None, initial_architecture="mlp",
                              initial_params={"hidden": [4]}, initial_source="builtin://breast_cancer",
                              data_key_file=key, round_uid=UID)  # fmt: skip
    path, key_file, uid, round_number = starting_model(args, tmp_path)
    assert (key_file, uid, round_number) == (key, UID, 0)
    record = load_record(read_artifact(path, key.read_bytes(), kind=ARTIFACT_KIND, binding=round_binding(UID, 0)))
    assert record.num_classes == 2 and record.input_shape == (30,)


def test_a_previous_rounds_model_needs_its_round_uid_and_final_round(tmp_path: Path) -> None:
    args = argparse.Namespace(initial_model=tmp_path / "round-002.model", initial_model_key_file=tmp_path / "key",
                              initial_round_uid=None, initial_round=None, round_uid=UID)  # fmt: skip
    with pytest.raises(AggregationError, match="--initial-round-uid and --initial-round"):
        starting_model(args, tmp_path)
    args.initial_round_uid, args.initial_round = "previous-uid", 2
    assert starting_model(args, tmp_path)[2:] == ("previous-uid", 2)
