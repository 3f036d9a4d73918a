"""Compression benchmark: stored bytes, public-evaluation accuracy and CPU inference latency, fp32 vs compressed.

Trains each built-in example model on all of its dataset's training part (``builtin://<name>``, as
a SecureModel does) with the train worker's DP-SGD at ε = 2 (δ = 1e-5, batch 64, 10 epochs,
calibrated by the operator's own :func:`securemodel.privacy.calibration.calibrate_dp_sgd`),
then compresses it at several (sparsity, quantization) settings with the compress worker's code
and reports, side by side in one run:

* stored bytes: the fp32 payload vs the compressed payload (plaintext; the encrypted artifact
  adds a constant 39 bytes of header, nonce and tag to each), and their ratio;
* accuracy of the fp32 model and of the compressed payload as serving decodes it, on all of the
  dataset's public evaluation part (``builtin://<name>?part=evaluation``, never trained on), as the
  compress worker measures it;
* CPU inference latency of ``predict_proba`` for batch 1 and batch 256 (median of ``--runs``).

Stored bytes and accuracy change per model are also drawn in ``docs/img/compression.png`` (``--plot``).

    python -m bench.compression [--runs 200] [--threads 1] [--json out.json] [--plot docs/img/compression.png]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.plots import IMG_DIR, Panel, bar_charts
from securemodel.compression import compress_state
from securemodel.data.loading import load_dataset, load_evaluation
from securemodel.models import (
    ModelPredictor,
    ModelRecord,
    ModelSpec,
    build_model,
    dump_compressed,
    dump_fp32,
    load_predictor,
)
from securemodel.privacy.calibration import calibrate_dp_sgd
from securemodel.workers.dpsgd import DPSGDConfig, train_dp_sgd

CASES = {
    "breast_cancer mlp [64, 32]": ("builtin://breast_cancer", ModelSpec("mlp", params={"hidden": [64, 32]})),
    "digits mlp [128, 64]": ("builtin://digits", ModelSpec("mlp", params={"hidden": [128, 64]})),
    "digits cnn [16, 32]": ("builtin://digits", ModelSpec("cnn", params={"channels": [16, 32]})),
}
SETTINGS = [(0.0, "int8"), (0.5, "none"), (0.5, "int8"), (0.75, "int8")]
EPSILON, DELTA, BATCH, EPOCHS = 2.0, 1e-5, 64, 10


def latency_ms(predictor: ModelPredictor, x: np.ndarray, runs: int) -> float:
    predictor.predict_proba(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        predictor.predict_proba(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def bench_case(source: str, spec: ModelSpec, runs: int) -> dict[str, Any]:
    data = load_dataset(source)
    x_public, y_public = load_evaluation(f"{source}?part=evaluation", training=source)
    calibration = calibrate_dp_sgd(EPSILON, DELTA, len(data.y_train), BATCH, EPOCHS)
    torch.manual_seed(0)
    model = build_model(spec, data.input_shape, data.num_classes)
    config = DPSGDConfig(calibration.noise_multiplier, calibration.sample_rate, calibration.steps, 1.0, 0.5)
    train_dp_sgd(model, data.model_inputs(data.x_train), data.y_train, config, device=torch.device("cpu"))
    record = ModelRecord.from_module(spec, model, data.input_shape, data.num_classes, data.standardization)
    fp32_bytes = len(dump_fp32(record))
    fp32 = ModelPredictor(record, "fp32")
    one, batch = x_public[:1], np.resize(x_public, (256, *data.input_shape))
    row: dict[str, Any] = {
        "parameters": sum(a.size for a in record.state.values()),
        "sigma": round(calibration.noise_multiplier, 3),
        "steps": calibration.steps,
        "fp32": {
            "bytes": fp32_bytes,
            "accuracy": fp32.accuracy(x_public, y_public),
            "ms_batch1": latency_ms(fp32, one, runs),
            "ms_batch256": latency_ms(fp32, batch, runs),
        },
        "compressed": [],
    }
    for sparsity, quantization in SETTINGS:
        payload = dump_compressed(record, compress_state(record.state, sparsity, quantization))  # type: ignore[arg-type]
        small = load_predictor(payload, "compressed")
        row["compressed"].append(
            {
                "sparsity": sparsity,
                "quantization": quantization,
                "bytes": len(payload),
                "ratio": fp32_bytes / len(payload),
                "accuracy": small.accuracy(x_public, y_public),
                "ms_batch1": latency_ms(small, one, runs),
                "ms_batch256": latency_ms(small, batch, runs),
            }
        )
    return row


def markdown(result: dict[str, Any]) -> str:
    """The results as a markdown table."""
    lines = [
        f"CPU, {result['threads']} thread(s), torch {result['torch']}; DP-SGD at ε = {EPSILON}, δ = {DELTA}; "
        f"latency = median of {result['runs']} calls",
        "",
        "| model (params) | setting | stored bytes | × smaller | accuracy (public) | Δ accuracy "
        "| ms, batch 1 | ms, batch 256 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in result["cases"].items():
        base = row["fp32"]
        lines.append(
            f"| {name} ({row['parameters']}) | fp32 | {base['bytes']} | 1.0 | {base['accuracy']:.3f} | – "
            f"| {base['ms_batch1']:.3f} | {base['ms_batch256']:.3f} |"
        )
        for c in row["compressed"]:
            lines.append(
                f"| | sparsity {c['sparsity']}, {c['quantization']} | {c['bytes']} | {c['ratio']:.1f} "
                f"| {c['accuracy']:.3f} | {c['accuracy'] - base['accuracy']:+.3f} "
                f"| {c['ms_batch1']:.3f} | {c['ms_batch256']:.3f} |"
            )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> Path:
    """Two panels by model: stored kB of fp32 and of every setting; accuracy change of every setting."""
    cases = result["cases"]
    models = [name.replace(" [", "\n[") for name in cases]
    settings = [f"sparsity {s}, {q}" for s, q in SETTINGS]
    stored = {"fp32": [row["fp32"]["bytes"] / 1000 for row in cases.values()]}
    stored |= {
        label: [row["compressed"][i]["bytes"] / 1000 for row in cases.values()] for i, label in enumerate(settings)
    }
    change = {
        label: [100 * (row["compressed"][i]["accuracy"] - row["fp32"]["accuracy"]) for row in cases.values()]
        for i, label in enumerate(settings)
    }
    panels = [
        Panel("Stored payload size", "stored bytes (kB, plaintext)", models, stored, value_format="{:.1f}"),
        Panel("Public-evaluation accuracy change vs fp32", "Δ accuracy (percentage points)", models, change, "{:+.1f}"),
    ]
    return bar_charts(path, f"Compression of DP-SGD models (ε = {EPSILON}), fp32 vs compressed", panels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="predict_proba calls per latency")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--plot", type=Path, default=IMG_DIR / "compression.png", help="write the figure here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    started = time.perf_counter()
    cases = {name: bench_case(source, spec, args.runs) for name, (source, spec) in CASES.items()}
    result = {
        "threads": args.threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "runs": args.runs,
        "seconds": round(time.perf_counter() - started, 1),
        "cases": cases,
    }
    print(markdown(result))
    print(f"figure: {plot(result, args.plot)}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(result, file, indent=2)


if __name__ == "__main__":
    main()
