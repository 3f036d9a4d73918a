"""Accuracy of the federated example against central training: three clinics, ε = 1 each, one run.

* ``federated``: three silos, shard i of 3 of ``builtin://breast_cancer`` each, ``--rounds``
  rounds of FedAvg under SecAgg+ on Flower's deployment engine (local processes, as the pods
  run; :mod:`securemodel.workers.federated.local`), one local epoch per round at batch 32; each
  silo's σ calibrated (PRV accountant) for ε = 1, δ = 1e-5 over all its steps of all rounds, on
  all of its shard (nothing is held out);
* ``central DP``: one model on the union of the three silos' shards (the whole 456-example
  training part), the same number of epochs, batch 32, σ calibrated for ε = 1 on the union
  (q = 32 / 456);
* ``non-private``: the same central training without clipping or noise (plain minibatch SGD).

All start from the same initial weights and the data set's published input map, and are
measured on all of the public evaluation part ``builtin://breast_cancer?part=evaluation`` (113
examples no silo holds; for the federated model, the accuracy the aggregator measures on it,
``spec.evaluation.source`` of the example round). Central runs repeat over ``--repeats`` draws
of the DP noise and sampling (mean and range); the federated run is one draw.

    python -m bench.federated_accuracy [--rounds 3] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.federated import EVALUATION, SOURCE, initial_record
from securemodel.data.loading import load_dataset, load_evaluation
from securemodel.models import ModelPredictor, ModelRecord
from securemodel.privacy.calibration import calibrate_noise, poisson_sample_rate, steps_for_epochs
from securemodel.workers.dpsgd import DPSGDConfig, train_dp_sgd
from securemodel.workers.federated.local import LocalRound, LocalSilo, RoundOptions

EPSILON, DELTA, BATCH, LEARNING_RATE, CLIP = 1.0, 1e-5, 32, 0.5, 1.0


def shards() -> list[Any]:
    return [load_dataset(f"{SOURCE}?shard={i}&of=3") for i in range(3)]


def public_accuracy(record: ModelRecord, model: nn.Module) -> float:
    """Accuracy of ``model`` (with ``record``'s input map) on all of the public evaluation part."""
    trained = ModelRecord.from_module(
        record.spec, model, record.input_shape, record.num_classes, record.standardization
    )
    x, y = load_evaluation(EVALUATION, training=SOURCE)
    return float(ModelPredictor(trained, "central").accuracy(x, y))


def central(record: ModelRecord, data: list[Any], epochs: int, private: bool) -> float:
    """Train from ``record`` on the union of the silos' shards; accuracy on the public evaluation part."""
    assert record.standardization is not None
    x = record.standardization.apply(np.concatenate([d.x_train for d in data]))
    y = np.concatenate([d.y_train for d in data])
    model = record.build().train()
    if private:
        q, steps = poisson_sample_rate(BATCH, len(y)), steps_for_epochs(epochs, BATCH, len(y))
        sigma = calibrate_noise(EPSILON, DELTA, q, steps).noise_multiplier
        train_dp_sgd(model, x, y, DPSGDConfig(sigma, q, steps, CLIP, LEARNING_RATE), device=torch.device("cpu"))
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
        inputs, labels = torch.from_numpy(x), torch.from_numpy(y)
        for _ in range(epochs):
            for batch in torch.randperm(len(y)).split(BATCH):
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(inputs[batch]), labels[batch]).backward()
                optimizer.step()
    return public_accuracy(record, model.eval())


def federated(record: ModelRecord, data: list[Any], rounds: int) -> dict[str, Any]:
    silos = []
    for i, d in enumerate(data):
        n = len(d.y_train)
        q, steps = poisson_sample_rate(BATCH, n), steps_for_epochs(1, BATCH, n)
        sigma = calibrate_noise(EPSILON, DELTA, q, steps * rounds).noise_multiplier
        silos.append(LocalSilo(f"clinic-{'abc'[i]}", f"{SOURCE}?shard={i}&of=3", sigma, q, steps, rounds, CLIP))
    options = RoundOptions(
        rounds=rounds,
        min_clients=3,
        threshold=2,
        learning_rate=LEARNING_RATE,
        stage_timeout=300,
        timeout=3000,
        evaluation_source=EVALUATION,
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
            {"name": s.name, "sigma": s.noise_multiplier, "q": s.sample_rate, "steps": s.steps_per_round * rounds}
            for s in silos
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    record, data = initial_record(), shards()
    rows: dict[str, Any] = {}
    for name, private in (("central DP", True), ("non-private", False)):
        scores = [central(record, data, args.rounds, private) for _ in range(args.repeats)]
        rows[name] = {"mean": statistics.mean(scores), "min": min(scores), "max": max(scores)}
        print(name, json.dumps(rows[name]), flush=True)
    rows["federated"] = federated(record, data, args.rounds)
    print("federated", json.dumps(rows["federated"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
