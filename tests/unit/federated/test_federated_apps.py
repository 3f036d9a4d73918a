"""The ClientApp's training and refusals, and the app bundle fl-aggregate submits, without a Flower runtime."""

from pathlib import Path

import numpy as np
import pytest
from federated_support import run_settings, silo_settings
from flwr.app import Context, RecordDict
from flwr.cli.build import build_fab_from_disk
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from securemodel.models import ModelRecord
from securemodel.workers.federated import client_app, server_app
from securemodel.workers.federated.aggregate import write_app
from securemodel.workers.federated.client_app import (
    RoundsExhaustedError,
    SecureAggregationRequiredError,
    SiloClient,
    plain_client_fn,
)
from securemodel.workers.federated.contract import SiloProgress, SiloSettings
from securemodel.workers.federated.server_app import model_header


def weights(record: ModelRecord) -> list[np.ndarray]:
    return [record.state[name] for name in record.state]


def test_fit_runs_exactly_the_silos_steps_and_counts_them(tmp_path: Path, initial_record: ModelRecord) -> None:
    silo = silo_settings(steps_per_round=4, rounds=2, progress_file=tmp_path / "progress.json")
    client = SiloClient(silo, learning_rate=0.5, optimizer="sgd")
    config = {"round": 1, "model": model_header(initial_record)}
    new, examples, metrics = client.fit(weights(initial_record), config)
    assert metrics["steps"] == 4 and metrics["silo"] == "clinic-a"
    assert examples == 152  # the training split of a third of 569 examples
    assert [w.shape for w in new] == [w.shape for w in weights(initial_record)]
    assert any(not np.allclose(a, b) for a, b in zip(new, weights(initial_record), strict=True))
    assert SiloProgress.read(silo.progress_file) == SiloProgress(1, 4)
    client.fit(new, config)
    assert SiloProgress.read(silo.progress_file) == SiloProgress(2, 8)
    with pytest.raises(RoundsExhaustedError, match="2 rounds"):
        client.fit(new, config)
    assert SiloProgress.read(silo.progress_file) == SiloProgress(2, 8)


def test_evaluate_reports_validation_accuracy(tmp_path: Path, initial_record: ModelRecord) -> None:
    client = SiloClient(silo_settings(progress_file=tmp_path / "p.json"), learning_rate=0.5, optimizer="sgd")
    loss, examples, metrics = client.evaluate(weights(initial_record), {"model": model_header(initial_record)})
    assert examples == 38 and 0.0 <= float(metrics["accuracy"]) <= 1.0 and loss > 0
    assert not (tmp_path / "p.json").exists()  # evaluation spends no training round


def context(silo: SiloSettings, secure_run: bool) -> Context:
    return Context(
        run_id=1,
        node_id=2,
        node_config=silo.to_config(),
        state=RecordDict(),
        run_config=run_settings(secure_aggregation=secure_run).to_config(),
    )


def test_unmasked_client_app_refuses_a_silo_that_requires_secure_aggregation(tmp_path: Path) -> None:
    silo = silo_settings(progress_file=tmp_path / "p.json")
    with pytest.raises(SecureAggregationRequiredError):
        plain_client_fn(context(silo, secure_run=False))
    with pytest.raises(SecureAggregationRequiredError):  # what the run configuration claims does not matter
        plain_client_fn(context(silo, secure_run=True))
    assert plain_client_fn(context(silo_settings(secure_aggregation=False), secure_run=False))


def test_app_bundle_names_the_images_components_and_builds(tmp_path: Path) -> None:
    app = write_app(tmp_path / "app", run_settings())
    assert build_fab_from_disk(app)  # Flower's own bundle builder accepts it
    text = (app / "pyproject.toml").read_text()
    assert 'serverapp = "securemodel.workers.federated.server_app:app"' in text
    assert 'clientapp = "securemodel.workers.federated.client_app:app"' in text
    assert "dependencies = []" in text
    plain = write_app(tmp_path / "plain", run_settings(secure_aggregation=False, threshold=0))
    assert "client_app:plain_app" in (plain / "pyproject.toml").read_text()
    assert isinstance(server_app.app, ServerApp)
    assert isinstance(client_app.app, ClientApp) and isinstance(client_app.plain_app, ClientApp)
