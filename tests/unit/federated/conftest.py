"""Shared pieces of the federated tests."""

import pytest
import torch

from securemodel.data.loading import load_dataset
from securemodel.models import ModelRecord, ModelSpec, build_model

SOURCE = "builtin://breast_cancer"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes more than a minute (a federated round as local processes)")


@pytest.fixture(scope="session")
def initial_record() -> ModelRecord:
    """A freshly initialised small MLP for breast_cancer, with the data set's published input map."""
    spec = ModelSpec("mlp", None, {"hidden": [8]})
    data = load_dataset(SOURCE)
    torch.manual_seed(0)
    model = build_model(spec, data.input_shape, data.num_classes)
    return ModelRecord.from_module(spec, model, data.input_shape, data.num_classes, data.standardization)
