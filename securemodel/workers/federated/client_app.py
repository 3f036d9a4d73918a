"""The ClientApp: one silo's DP-SGD update of the global model, submitted under SecAgg+.

Privacy guarantee (per silo, sample level): every round the silo trains with
:func:`securemodel.workers.dpsgd.train_dp_sgd` at exactly the noise multiplier σ, Poisson sample
rate q and ``steps-per-round`` of ITS OWN node configuration (set by the operator on its
SuperNode), on all of its own data (nothing is held out), starting from the global model. Over at most
``rounds`` rounds (the silo's progress file refuses more) its updates are the Poisson-subsampled
Gaussian mechanism composed ``rounds × steps-per-round`` times, the mechanism the operator
calibrated σ for; the global models are post-processing of them. Noise and sampling are those of
:mod:`securemodel.workers.dpsgd` (secret, independent in every round).

A silo never evaluates: :meth:`SiloClient.evaluate` refuses, so no accuracy, loss or other
statistic of its private data leaves the pod; the aggregator measures the global model's accuracy
on the round's public evaluation source (:mod:`.server_app`). Outside the guarantee: only the
number of the silo's training examples (FedAvg's weight, also how the operator sized q). With
secure aggregation the updates leave the silo only masked (``secaggplus_mod`` in :data:`app`);
the unmasked :data:`plain_app` refuses to train unless the silo's node configuration allows it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np
from flwr.app import Context
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import NDArrays, Scalar

from securemodel.workers.federated.contract import (
    RunSettings,
    SiloProgress,
    SiloSettings,
)


class SecureAggregationRequiredError(RuntimeError):
    """The silo requires secure aggregation but the run does not use it."""


class RoundsExhaustedError(RuntimeError):
    """The silo has trained in as many rounds as its ε was calibrated for."""


class PrivateEvaluationError(RuntimeError):
    """Asked to evaluate on the silo's private data, which a silo never does."""


def _global_model(header: dict[str, Any], parameters: NDArrays) -> tuple[Any, Any]:
    """The global model as a torch module and its input standardization (or None)."""
    import torch

    from securemodel.data.loading import Standardization
    from securemodel.models import ModelSpec, build_model

    shape = tuple(int(d) for d in header["inputShape"])
    model = build_model(ModelSpec.from_json(header["model"]), shape, int(header["numClasses"]))
    state = {
        name: torch.from_numpy(np.array(array)) for name, array in zip(header["stateNames"], parameters, strict=True)
    }
    model.load_state_dict(state, strict=True)
    standardization = None
    if header["mean"] is not None:
        mean = np.asarray(header["mean"], dtype=np.float32).reshape(shape)
        standardization = Standardization(mean, np.asarray(header["scale"], dtype=np.float32).reshape(shape))
    return model, standardization


def _fresh_seed() -> dict[str, int]:
    """A never-stored random seed while :class:`DPSGDConfig` still takes one (its secret source replaces it)."""
    from securemodel.workers.dpsgd import DPSGDConfig

    if "seed" in {f.name for f in dataclasses.fields(DPSGDConfig)}:
        return {"seed": int.from_bytes(os.urandom(8), "little")}
    return {}


class SiloClient(NumPyClient):
    """Trains the global model on one silo's data (and never evaluates on it)."""

    def __init__(self, silo: SiloSettings, learning_rate: float, optimizer: str) -> None:
        self.silo = silo
        self.learning_rate = learning_rate
        self.optimizer = optimizer

    def _data(self) -> Any:
        from securemodel.data.loading import load_dataset
        from securemodel.data.tables import TableSchema

        schema = TableSchema.from_spec(json.loads(self.silo.data_schema)) if self.silo.data_schema else None
        # All of the silo's data: the operator sized q from all of it, and nothing is held out to evaluate.
        return load_dataset(
            self.silo.data_source,
            data_root=self.silo.data_root,
            samples=self.silo.data_samples,
            schema=schema,
        )

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        """Train ``steps-per-round`` DP-SGD steps from the global weights; returns the new weights."""
        import torch

        from securemodel.workers.dpsgd import DPSGDConfig, DPSGDProgress, train_dp_sgd

        progress_file = self.silo.progress_file
        spent = SiloProgress.read(progress_file)
        if spent.rounds_trained >= self.silo.rounds:
            raise RoundsExhaustedError(
                f"silo {self.silo.silo} has trained in {spent.rounds_trained} rounds, all its ε was calibrated for"
            )
        header = json.loads(str(config["model"]))
        model, standardization = _global_model(header, parameters)
        data = self._data()
        x = data.x_train if standardization is None else standardization.apply(data.x_train)
        dp = DPSGDConfig(
            noise_multiplier=self.silo.noise_multiplier,
            sample_rate=self.silo.sample_rate,
            steps=self.silo.steps_per_round,
            max_grad_norm=self.silo.max_grad_norm,
            learning_rate=self.learning_rate,
            optimizer=self.optimizer,  # type: ignore[arg-type]
            **_fresh_seed(),
        )
        # The round counts as spent before the first noisy step reads the data.
        SiloProgress(spent.rounds_trained + 1, spent.steps).write(progress_file)
        progress = DPSGDProgress()
        try:
            report = train_dp_sgd(
                model,
                x,
                data.y_train,
                dp,
                device=torch.device("cpu"),
                progress=progress,
            )
        finally:
            SiloProgress(spent.rounds_trained + 1, spent.steps + progress.steps).write(progress_file)
        weights = [tensor.detach().cpu().numpy() for tensor in model.state_dict().values()]
        metrics: dict[str, Scalar] = {
            "silo": self.silo.silo,
            "steps": report.steps,
            "sampledExamples": report.sampled_examples,
        }
        return weights, report.train_examples, metrics

    def evaluate(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[float, int, dict[str, Scalar]]:
        """Refused: an accuracy on private records would be released outside the silo's DP guarantee."""
        raise PrivateEvaluationError(
            f"silo {self.silo.silo} does not evaluate on its private data; the aggregator measures accuracy on "
            "the round's public evaluation source"
        )


def _silo_client(context: Context) -> SiloClient:
    run = RunSettings.from_config(context.run_config)
    return SiloClient(SiloSettings.from_config(context.node_config), run.learning_rate, run.optimizer)


def client_fn(context: Context) -> Any:
    """Flower's factory for :data:`app`, where ``secaggplus_mod`` masks every update."""
    return _silo_client(context).to_client()


def plain_client_fn(context: Context) -> Any:
    """Flower's factory for :data:`plain_app` (no masking): only for silos that allow it."""
    client = _silo_client(context)
    if client.silo.secure_aggregation:
        raise SecureAggregationRequiredError(
            f"silo {client.silo.silo} submits updates only under secure aggregation; this ClientApp has none"
        )
    return client.to_client()


# Updates leave the silo masked: secaggplus_mod runs the client side of Flower's SecAgg+.
app = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
# For runs without secure aggregation (comparison only): silos must allow it in their node configuration.
plain_app = ClientApp(client_fn=plain_client_fn)
