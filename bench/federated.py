"""Federated round benchmark: time of one round with SecAgg+ ÷ without, for 3, 10 and 30 silos, one run.

Each configuration runs the pods' own commands (``fl-aggregate``, ``fl-client``; TLS, SuperNode
authentication) as local processes on 127.0.0.1 (:mod:`securemodel.workers.federated.local`),
not as pods: Flower's deployment engine, SuperLink and SuperNodes, started fresh per
configuration. Silo ``i`` of ``n`` holds shard ``i`` of ``builtin://breast_cancer`` and runs
``--steps`` DP-SGD steps (σ = 1, q = 0.2) of the built-in MLP, so the round time is mostly the
protocol, not the training. With SecAgg+ every silo holds a share of every key (num_shares =
n) and the threshold is ⌊n/2⌋ + 1; without it the ServerApp runs Flower's default fit workflow.

Measured, from the ServerApp's result: ``fit`` = from the start of the round's fit (all silos
online) to the aggregate; ``round`` = fit + the aggregator's evaluation of the new global model on
the public evaluation part ``builtin://breast_cancer?part=evaluation`` (113 examples; the silos
evaluate nothing); and
the bytes Flower counted on the SuperLink for the whole run. Configurations alternate with and
without SecAgg+ at each size so load drifting on a shared machine hits both alike.

    python -m bench.federated [--silos 3 10 30] [--steps 2] [--json out.json] [--plot docs/img/federated.png]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.plots import IMG_DIR, Panel, bar_charts
from securemodel.data.loading import load_dataset
from securemodel.models import ModelRecord, ModelSpec, build_model
from securemodel.workers.federated.local import LocalRound, LocalSilo, RoundOptions

SOURCE = "builtin://breast_cancer"
EVALUATION = f"{SOURCE}?part=evaluation"  # public, never trained on: the only data an accuracy is read from


MLP = ModelSpec("mlp", None, {"hidden": [16]})


def initial_record(spec: ModelSpec = MLP, source: str = SOURCE) -> ModelRecord:
    """A freshly initialised ``spec`` (seed 0) with the published input map of the data set ``source``."""
    data = load_dataset(source)
    torch.manual_seed(0)
    model = build_model(spec, data.input_shape, data.num_classes)
    return ModelRecord.from_module(spec, model, data.input_shape, data.num_classes, data.standardization)


def one_round(n: int, secure: bool, steps: int, record: ModelRecord, timeout: float) -> dict[str, Any]:
    """Run one round with ``n`` silos; returns its timings."""
    silos = [
        LocalSilo(f"silo-{i:02d}", f"{SOURCE}?shard={i}&of={n}", 1.0, 0.2, steps, 1, allow_plain_aggregation=True)
        for i in range(n)
    ]
    options = RoundOptions(
        min_clients=n,
        threshold=n // 2 + 1,
        secure_aggregation=secure,
        stage_timeout=timeout,
        timeout=timeout,
        evaluation_source=EVALUATION,
    )
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix=f"bench-fl-{n}-") as directory,
        LocalRound(Path(directory), silos, record, options) as federation,
    ):
        result = federation.wait(timeout + 120)
    if result.get("status") != "Succeeded":
        raise RuntimeError(f"{n} silos, secure={secure}: {result.get('error')}")
    history = result["history"][0]
    return {
        "silos": n,
        "secureAggregation": secure,
        "fitSeconds": history["fitSeconds"],
        "roundSeconds": history["seconds"],
        "networkBytes": result.get("networkBytes"),
        "accuracy": history["accuracy"],
        "wallSeconds": round(time.monotonic() - started, 1),
    }


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Round time with and without SecAgg+, and their ratio, per number of silos."""
    sizes = sorted({row["silos"] for row in rows})

    def value(n: int, secure: bool, key: str) -> float:
        return float(next(r[key] for r in rows if r["silos"] == n and r["secureAggregation"] == secure))

    ratios = [value(n, True, "roundSeconds") / value(n, False, "roundSeconds") for n in sizes]
    return bar_charts(
        path,
        "One federated round on Flower's deployment engine (local processes, 2 cores)",
        [
            Panel(
                "Round time (fit + evaluation)",
                "seconds",
                [str(n) for n in sizes],
                {
                    "FedAvg": [value(n, False, "roundSeconds") for n in sizes],
                    "FedAvg + SecAgg+": [value(n, True, "roundSeconds") for n in sizes],
                },
                "{:.0f}",
            ),
            Panel(
                "SecAgg+ ÷ plain",
                "ratio",
                [str(n) for n in sizes],
                {"ratio": ratios},
                reference=2.0,
                reference_label="goal ≤ 2×",
            ),
        ],
    )


def main() -> None:
    """Run the benchmark; print the table rows as they come."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--silos", type=int, nargs="+", default=[3, 10, 30])
    parser.add_argument("--steps", type=int, default=2, help="DP-SGD steps per silo and round")
    parser.add_argument("--timeout", type=float, default=1500.0, help="seconds one round may take")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path, default=IMG_DIR / "federated.png")
    args = parser.parse_args()
    record = initial_record()
    rows: list[dict[str, Any]] = []
    print(f"# {platform.node()} {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}", flush=True)
    for n in args.silos:
        for secure in (True, False):
            row = one_round(n, secure, args.steps, record, args.timeout)
            row["load"] = round(os.getloadavg()[0], 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.json:
                args.json.write_text(json.dumps(rows, indent=1))
    for n in args.silos:
        with_, without = (
            next(r for r in rows if r["silos"] == n and r["secureAggregation"] == s) for s in (True, False)
        )
        print(
            f"| {n} | {without['roundSeconds']:.1f} | {with_['roundSeconds']:.1f} | "
            f"{with_['roundSeconds'] / without['roundSeconds']:.2f} | {with_['fitSeconds'] / without['fitSeconds']:.2f} | "
            f"{with_['networkBytes'] / without['networkBytes']:.2f} |"
        )
    if args.plot:
        print("plot:", plot(rows, args.plot))


if __name__ == "__main__":
    main()
