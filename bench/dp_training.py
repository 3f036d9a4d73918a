"""DP training benchmark: DP-SGD step time ÷ non-private step time, same model, same batch size, one run.

For the built-in MLP and CNN (digits-shaped 8×8 inputs, 10 classes) at batch sizes 64, 256 and
1024, on a synthetic dataset of 16 × 1024 examples, it times a training step of:

* ``non-private``: plain SGD on a uniformly drawn batch of exactly B examples;
* ``securemodel``: the train worker's DP-SGD (:func:`securemodel.workers.dpsgd.train_dp_sgd`)
  at q = B/N, in the clipping mode it picks for the model, and also forced to the other mode;
* ``opacus README``: Opacus as its README shows it, ``PrivacyEngine().make_private`` on a
  ``DataLoader`` (hooks mode, Poisson sampling), iterating the private loader.

Each step is timed on its own, sampling and batch assembly included (the train worker's steps
by timestamps from its progress hook, which fires once per noisy step); after warm-up steps,
every variant runs ``--repeats`` times, interleaved so that load drifting on a shared machine
hits all alike, and the median step time is kept. Bounded by ``--steps`` per run.

The ratios are also drawn, per model and batch size, in ``docs/img/dp_training.png`` (``--plot``).

    python -m bench.dp_training [--steps 20] [--repeats 3] [--device cpu] [--threads 1] [--json out.json]
        [--plot docs/img/dp_training.png]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import opacus
import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bench.plots import IMG_DIR, Panel, bar_charts
from securemodel.models import ModelSpec, build_model
from securemodel.workers.dpsgd import ClippingMode, DPSGDConfig, DPSGDProgress, clipping_mode_for, train_dp_sgd

N = 16 * 1024
INPUT_SHAPE = (8, 8)
CLASSES = 10
BATCHES = (64, 256, 1024)
MODELS = {"mlp": ModelSpec("mlp"), "cnn": ModelSpec("cnn")}
WARMUP = 3
SIGMA, CLIP, LR = 1.0, 1.0, 0.05


def fresh_model(spec: ModelSpec, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    return build_model(spec, INPUT_SHAPE, CLASSES).to(device)


class StepClock(DPSGDProgress):
    """Progress that timestamps every noisy step the train worker's loop takes (via its step hook)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stamps: list[float] = []
        super().__init__()

    @property
    def steps(self) -> int:
        return max(len(self.stamps) - 1, 0)

    @steps.setter
    def steps(self, value: int) -> None:
        _sync(self.device)
        if value == 0:
            self.stamps = [time.perf_counter()]
        else:
            self.stamps.append(time.perf_counter())


def time_non_private(spec: ModelSpec, x: torch.Tensor, y: torch.Tensor, batch: int, steps: int) -> list[float]:
    model = fresh_model(spec, x.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    criterion = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        index = torch.randint(0, N, (batch,), generator=generator).to(x.device)
        optimizer.zero_grad()
        criterion(model(x[index]), y[index]).backward()
        optimizer.step()

    return _step_times(step, steps, x.device)


def time_securemodel(
    spec: ModelSpec, x: np.ndarray, y: np.ndarray, batch: int, steps: int, device: torch.device, mode: ClippingMode
) -> list[float]:
    clock = StepClock(device)
    config = DPSGDConfig(SIGMA, batch / N, WARMUP + steps, CLIP, LR)
    train_dp_sgd(fresh_model(spec, device), x, y, config, device=device, progress=clock, mode=mode)
    return list(np.diff(clock.stamps)[WARMUP:])


def time_opacus_readme(spec: ModelSpec, x: torch.Tensor, y: torch.Tensor, batch: int, steps: int) -> list[float]:
    model = fresh_model(spec, x.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch)
    engine = PrivacyEngine()
    model, optimizer, loader = engine.make_private(
        module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=SIGMA, max_grad_norm=CLIP
    )
    criterion = nn.CrossEntropyLoss()
    batches = iter(loader)

    def step() -> None:
        nonlocal batches
        try:
            features, labels = next(batches)
        except StopIteration:
            batches = iter(loader)
            features, labels = next(batches)
        optimizer.zero_grad()
        criterion(model(features), labels).backward()
        optimizer.step()

    return _step_times(step, steps, x.device)


def _step_times(step: Callable[[], None], steps: int, device: torch.device) -> list[float]:
    for _ in range(WARMUP):
        step()
    times = []
    for _ in range(steps):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant (median step kept)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--plot", type=Path, default=IMG_DIR / "dp_training.png", help="write the figure here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")  # Opacus' secure-RNG and backward-hook notices
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    x_np = rng.normal(size=(N, *INPUT_SHAPE)).astype(np.float32)
    y_np = rng.integers(0, CLASSES, N)
    x, y = torch.from_numpy(x_np).to(device), torch.from_numpy(y_np).to(device)

    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for name, spec in MODELS.items():
        auto = clipping_mode_for(build_model(spec, INPUT_SHAPE, CLASSES))
        other: ClippingMode = "hooks" if auto == "ghost" else "ghost"
        for batch in BATCHES:
            variants: dict[str, Callable[[], list[float]]] = {
                "non-private": partial(time_non_private, spec, x, y, batch, args.steps),
                f"securemodel ({auto})": partial(time_securemodel, spec, x_np, y_np, batch, args.steps, device, auto),
                f"securemodel ({other})": partial(time_securemodel, spec, x_np, y_np, batch, args.steps, device, other),
                "opacus README (hooks)": partial(time_opacus_readme, spec, x, y, batch, args.steps),
            }
            samples: dict[str, list[float]] = {variant: [] for variant in variants}
            for _ in range(args.repeats):  # interleaved, so drifting load hits every variant alike
                for variant, measure in variants.items():
                    samples[variant] += measure()
            times = {variant: statistics.median(values) for variant, values in samples.items()}
            base = times["non-private"]
            row = {
                "model": name,
                "batch": batch,
                "clippingMode": auto,
                "ms": {k: round(v * 1e3, 3) for k, v in times.items()},
                "ratio": {k: round(v / base, 2) for k, v in times.items() if k != "non-private"},
            }
            rows.append(row)
            print(json.dumps(row), flush=True)

    result = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": args.threads,
        "torch": torch.__version__,
        "opacus": opacus.__version__,
        "python": platform.python_version(),
        "steps": args.steps,
        "repeats": args.repeats,
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
    }
    print(markdown(result))
    print(f"figure: {plot(result, args.plot)}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(result, file, indent=2)


def plot(result: dict[str, Any], path: Path) -> Path:
    """One panel per model: the DP ÷ non-private step-time ratios of every variant, by batch size."""
    panels = []
    for name in MODELS:
        rows = [row for row in result["rows"] if row["model"] == name]
        ours, other, readme = rows[0]["ratio"]
        labels = {ours: "securemodel, chosen mode", other: "securemodel, other mode", readme: "Opacus README (hooks)"}
        panels.append(
            Panel(
                title=f"{name} (chosen mode {rows[0]['clippingMode']}): non-private step "
                f"{rows[0]['ms']['non-private']:.2f}–{rows[-1]['ms']['non-private']:.2f} ms",
                ylabel="DP step time ÷ non-private step time (×)",
                categories=[f"batch {row['batch']}" for row in rows],
                series={label: [row["ratio"][key] for row in rows] for key, label in labels.items()},
                value_format="{:.1f}×",
                reference=1.0,
                reference_label="non-private (1×)",
            )
        )
    title = f"DP-SGD step cost, device {result['device']}, {result['threads']} thread(s), lower is better"
    return bar_charts(path, title, panels)


def markdown(result: dict[str, Any]) -> str:
    """The results as a markdown table (ratio = DP step time ÷ non-private step time)."""
    lines = [
        f"device {result['device']}, {result['threads']} thread(s), torch {result['torch']}, "
        f"opacus {result['opacus']}; median step of {result['repeats']} × {result['steps']} steps",
        "",
        "| model | batch | non-private ms/step | securemodel (mode) | ratio | other mode | ratio "
        "| Opacus README (hooks) | ratio |",
        "| --- | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        ms, ratio = row["ms"], row["ratio"]
        ours, other, readme = (k for k in ms if k != "non-private")
        lines.append(
            f"| {row['model']} | {row['batch']} | {ms['non-private']:.2f} | {ours} {ms[ours]:.2f} ms | "
            f"**{ratio[ours]:.2f}×** | {other} {ms[other]:.2f} ms | {ratio[other]:.2f}× | "
            f"{ms[readme]:.2f} ms | {ratio[readme]:.2f}× |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
