"""Accuracy of the federated example against central training, with the example's own settings.

The settings are read from the manifests ``make demo`` applies: the architecture of the SecureModel
``tumor-classifier`` (``examples/securemodel.yaml``), and the rounds, local epochs, batch, learning
rate, ε, δ and clipping norm of the FederatedRound (``examples/federatedround.yaml``).

* ``federated``: the round's three clinics (shard i of 3 of ``builtin://breast_cancer`` each), its
  rounds of FedAvg under SecAgg+ on Flower's deployment engine (local processes, as the pods run;
  :mod:`securemodel.workers.federated.local`); each clinic's q, steps and σ are the operator's own
  (:func:`~securemodel.operator.federated.calibration.silo_plan`, then the calibration every plan
  gets), on all of its shard (nothing is held out);
* ``central DP``: one model on the union of the clinics' shards (the whole training part), as many
  passes over it as each clinic makes over its shard (rounds × local epochs), the same batch,
  learning rate and clipping norm, σ calibrated for the same ε and δ on the union;
* ``non-private``: the same central training without clipping or noise (plain minibatch SGD).

All start from the same initial weights and the data set's published input map, and are
measured on all of the public evaluation part (the round's ``spec.evaluation.source``, which no
clinic holds; for the federated model, the accuracy the aggregator measures on it). Central runs
repeat over ``--repeats`` draws of the DP noise and sampling (mean and range); the federated run
is ``--federated-repeats`` draws (one by default: a draw runs Flower's whole deployment engine).

    python -m bench.federated_accuracy [--repeats 5] [--federated-repeats 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from bench.federated import initial_record
from securemodel.data.loading import load_dataset, load_evaluation
from securemodel.models import ModelPredictor, ModelRecord, ModelSpec
from securemodel.operator.federated.calibration import silo_plan
from securemodel.operator.federated.spec import RoundSpec, parse
from securemodel.privacy.calibration import calibrate_dp_sgd
from securemodel.workers.dpsgd import DPSGDConfig, train_dp_sgd
from securemodel.workers.federated.local import LocalRound, LocalSilo, RoundOptions

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def _manifest(path: Path, kind: str, name: str) -> dict[str, Any]:
    return next(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8"))
                if d and d["kind"] == kind and d["metadata"]["name"] == name)  # fmt: skip


@dataclass(frozen=True)
class Example:
    """The federated example as ``make demo`` applies it: the round and the model spec it trains."""

    round: RoundSpec
    model: ModelSpec

    @classmethod
    def load(cls) -> Example:
        round_manifest = _manifest(EXAMPLES / "federatedround.yaml", "FederatedRound", "tumor-classifier-round-1")
        model = _manifest(EXAMPLES / "securemodel.yaml", "SecureModel", round_manifest["spec"]["model"]["secureModelRef"])
        spec = model["spec"]["model"]
        return cls(parse(round_manifest["spec"], "clinic-a"), ModelSpec(spec["architecture"], None, spec.get("params") or {}))

    @property
    def source(self) -> str:
        """The data set the clinics' shards are of."""
        return self.round.silos[0].source.split("?")[0]


def public_accuracy(example: Example, record: ModelRecord, model: nn.Module) -> float:
    """Accuracy of ``model`` (with ``record``'s input map) on all of the round's public evaluation data."""
    trained = ModelRecord.from_module(
        record.spec, model, record.input_shape, record.num_classes, record.standardization
    )
    assert example.round.evaluation is not None
    x, y = load_evaluation(example.round.evaluation, training=example.source)
    return float(ModelPredictor(trained, "central").accuracy(x, y))


def central(example: Example, record: ModelRecord, private: bool) -> float:
    """Train from ``record`` on the union of the clinics' shards; accuracy on the public evaluation part."""
    spec = example.round
    assert record.standardization is not None
    data = [load_dataset(silo.source) for silo in spec.silos]
    x = record.standardization.apply(np.concatenate([d.x_train for d in data]))
    y = np.concatenate([d.y_train for d in data])
    epochs = spec.rounds * spec.local_epochs
    model = record.build().train()
    if private:
        c = calibrate_dp_sgd(spec.epsilon, spec.delta, len(y), spec.batch_size, epochs, spec.accountant)
        config = DPSGDConfig(c.noise_multiplier, c.sample_rate, c.steps, spec.max_grad_norm, spec.learning_rate)
        train_dp_sgd(model, x, y, config, device=torch.device("cpu"))
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=spec.learning_rate)
        inputs, labels = torch.from_numpy(x), torch.from_numpy(y)
        for _ in range(epochs):
            for batch in torch.randperm(len(y)).split(spec.batch_size):
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(inputs[batch]), labels[batch]).backward()
                optimizer.step()
    return public_accuracy(example, record, model.eval())


def federated(example: Example, record: ModelRecord) -> dict[str, Any]:
    """One draw of the example round, with each clinic's q, steps and σ as the operator calibrates them."""
    spec = example.round
    silos = []
    for silo in spec.silos:
        plan = silo_plan(spec, silo)
        c = calibrate_dp_sgd(plan.plan.epsilon, plan.plan.delta, plan.examples, spec.batch_size, plan.plan.epochs,
                             spec.accountant)  # fmt: skip
        silos.append(LocalSilo(silo.name, silo.source, c.noise_multiplier, c.sample_rate, plan.steps_per_round,
                               spec.rounds, spec.max_grad_norm))  # fmt: skip
    options = RoundOptions(
        rounds=spec.rounds,
        min_clients=spec.min_clients,
        threshold=spec.threshold,
        learning_rate=spec.learning_rate,
        stage_timeout=300,
        timeout=3000,
        evaluation_source=spec.evaluation,
    )
    with (
        tempfile.TemporaryDirectory(prefix="fl-accuracy-") as directory,
        LocalRound(Path(directory), silos, record, options) as federation,
    ):
        result = federation.wait(3100)
    if result.get("status") != "Succeeded":
        raise RuntimeError(result.get("error"))
    return {
        "accuracy": result["accuracy"],
        "evaluationExamples": result["evaluationExamples"],
        "perRound": [h["accuracy"] for h in result["history"]],
        "silos": [
            {"name": s.name, "sigma": s.noise_multiplier, "q": s.sample_rate, "steps": s.steps_per_round * spec.rounds}
            for s in silos
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="draws of each central run")
    parser.add_argument("--federated-repeats", type=int, default=1, help="draws of the round")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    example = Example.load()
    record = initial_record(example.model, example.source)
    rows: dict[str, Any] = {"settings": {"model": [example.model.architecture, example.model.params],
                                         "rounds": example.round.rounds, "localEpochs": example.round.local_epochs,
                                         "batchSize": example.round.batch_size,
                                         "learningRate": example.round.learning_rate,
                                         "epsilon": example.round.epsilon, "delta": example.round.delta}}  # fmt: skip
    print("settings", json.dumps(rows["settings"]), flush=True)
    for name, private in (("central DP", True), ("non-private", False)):
        scores = [central(example, record, private) for _ in range(args.repeats)]
        rows[name] = {"mean": statistics.mean(scores), "min": min(scores), "max": max(scores)}
        print(name, json.dumps(rows[name]), flush=True)
    rows["federated"] = [federated(example, record) for _ in range(args.federated_repeats)]
    print("federated", json.dumps(rows["federated"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
