"""The ClientApp's training and refusals, the ServerApp's public evaluation, and the app bundle fl-aggregate
submits, without a Flower runtime."""

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from federated_support import run_settings, silo_settings
from flwr.app import Context, RecordDict
from flwr.cli.build import build_fab_from_disk
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from securemodel.data.loading import DataLoadError
from securemodel.models import ModelPredictor, ModelRecord, ModelSpec, build_model
from securemodel.workers.federated import client_app, server_app
from securemodel.workers.federated.aggregate import write_app
from securemodel.workers.federated.client_app import (
    PrivateEvaluationError,
    RoundsExhaustedError,
    SecureAggregationRequiredError,
    SiloClient,
    plain_client_fn,
)
from securemodel.workers.federated.contract import RunSettings, SiloProgress, SiloSettings, canonical_json
from securemodel.workers.federated.server_app import PublicEvaluation, model_header


def weights(record: ModelRecord) -> list[np.ndarray]:
    return [record.state[name] for name in record.state]


def test_fit_runs_exactly_the_silos_steps_and_counts_them(tmp_path: Path, initial_record: ModelRecord) -> None:
    silo = silo_settings(steps_per_round=4, rounds=2, progress_file=tmp_path / "progress.json")
    client = SiloClient(silo, learning_rate=0.5, optimizer="sgd")
    config = {"round": 1, "model": model_header(initial_record)}
    new, examples, metrics = client.fit(weights(initial_record), config)
    assert metrics["steps"] == 4 and metrics["silo"] == "clinic-a"
    assert examples == 152  # all of a third of the 456-example training part: nothing is held out
    assert [w.shape for w in new] == [w.shape for w in weights(initial_record)]
    assert any(not np.allclose(a, b) for a, b in zip(new, weights(initial_record), strict=True))
    assert SiloProgress.read(silo.progress_file) == SiloProgress(1, 4)
    client.fit(new, config)
    assert SiloProgress.read(silo.progress_file) == SiloProgress(2, 8)
    with pytest.raises(RoundsExhaustedError, match="2 rounds"):
        client.fit(new, config)
    assert SiloProgress.read(silo.progress_file) == SiloProgress(2, 8)


def test_a_silo_refuses_to_evaluate_on_its_private_data(tmp_path: Path, initial_record: ModelRecord) -> None:
    client = SiloClient(silo_settings(progress_file=tmp_path / "p.json"), learning_rate=0.5, optimizer="sgd")
    with pytest.raises(PrivateEvaluationError, match="does not evaluate on its private data"):
        client.evaluate(weights(initial_record), {"model": model_header(initial_record)})
    assert not (tmp_path / "p.json").exists()


def test_the_reported_accuracy_is_measured_on_the_public_source_only_never_on_a_silos_records(
    tmp_path: Path,
) -> None:
    """The public file labels by the OPPOSITE rule of the silo's private one: an accuracy computed from the
    silo's records would be high, the one on the public file is low. The silo trains with the ClientApp; the
    ServerApp's evaluation runs with the private file gone."""
    volume = tmp_path / "volume"
    (volume / "clinic").mkdir(parents=True)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5)).astype(np.float32)
    rule = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    np.savez(volume / "clinic" / "private.npz", x=x[:300], y=rule[:300])
    np.savez(volume / "clinic" / "public.npz", x=x[300:], y=1 - rule[300:])
    schema = canonical_json({"label": {"classes": ["negative", "positive"]}})
    private, public = "pvc://clinic-data/clinic/private.npz", "pvc://clinic-data/clinic/public.npz"
    spec = ModelSpec("mlp", None, {"hidden": [16]})
    torch.manual_seed(0)
    initial = ModelRecord.from_module(spec, build_model(spec, (5,), 2), (5,), 2, None)
    silo = silo_settings(data_source=private, data_samples=300, data_root=volume, data_schema=schema,
                         noise_multiplier=1.0, sample_rate=0.2, steps_per_round=60, rounds=1,
                         progress_file=tmp_path / "p.json")  # fmt: skip
    new, examples, _ = SiloClient(silo, learning_rate=0.5, optimizer="sgd").fit(
        weights(initial), {"round": 1, "model": model_header(initial)}
    )
    assert examples == 300  # all of the private file
    trained = replace(initial, state=dict(zip(initial.state, new, strict=True)))
    assert ModelPredictor(trained, "m").accuracy(x[:300], rule[:300]) > 0.8  # what a private accuracy would show

    (volume / "clinic" / "private.npz").unlink()
    settings = run_settings(evaluation_source=public, evaluation_samples=100, evaluation_root=volume,
                            silo_sources=(private,), data_schema=schema)  # fmt: skip
    evaluation = PublicEvaluation.load(RunSettings.from_config(settings.to_config()))
    assert evaluation is not None and evaluation.source == public and len(evaluation.y) == 100
    assert evaluation.accuracy(trained) == ModelPredictor(trained, "m").accuracy(x[300:], 1 - rule[300:]) < 0.2


@pytest.mark.parametrize(
    ("evaluation", "silos", "complaint"),
    [
        ("builtin://breast_cancer", ("builtin://breast_cancer?shard=0&of=3",), "evaluated on its public evaluation"),
        ("builtin://breast_cancer?part=evaluation", ("builtin://breast_cancer?shard=0&of=2", "builtin://wine"),
         "cannot evaluate a model trained on 'builtin://wine'"),
        ("pvc://c/clinic/a.npz", ("pvc://c/clinic/a.npz",), "is the training data"),
    ],
)
def test_an_evaluation_source_that_may_hold_a_silos_records_is_refused(
    evaluation: str, silos: tuple[str, ...], complaint: str
) -> None:
    with pytest.raises(DataLoadError, match=re.escape(complaint)):
        PublicEvaluation.load(run_settings(evaluation_source=evaluation, silo_sources=silos))


def test_without_an_evaluation_source_nothing_is_evaluated() -> None:
    assert PublicEvaluation.load(run_settings()) is None


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
