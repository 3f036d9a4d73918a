"""DP training benchmark: DP-SGD step time ÷ non-private step time, and peak memory, same model and batch, one run.

For the built-in ``mlp`` and ``cnn`` (digits-shaped 8×8 inputs, 10 classes) and ``transformer``
(defaults: 32 token ids from 256, width 64, 2 blocks; 10 classes) at batch sizes 64, 256 and
1024, on synthetic data of 16 × 1024 examples, it times a training step of:

* ``non-private``: plain SGD on a uniformly drawn batch of exactly B examples;
* ``bookkeeping``: the train worker's DP-SGD (:func:`securemodel.workers.dpsgd.train_dp_sgd`) at
  q = B/N in book-keeping mode, secret sampling and noise included;
* ``Opacus ghost`` and ``Opacus hooks``: Opacus as its README shows it, ``PrivacyEngine().make_private``
  on a ``DataLoader`` (Poisson sampling) with ``grad_sample_mode="ghost"`` (and its criterion) or
  the default hooks, iterating the private loader.

Each step is timed on its own, sampling and batch assembly included (the train worker's steps
by timestamps from its progress counter, which moves once per noisy step). On the CPU the clock
is the training thread's CPU time (``time.thread_time``; torch runs on that one thread with
``--threads 1``), not wall time, so that other processes on a shared machine do not count; on
CUDA it is wall time after a synchronisation. After warm-up steps,
every variant runs ``--repeats`` times, interleaved so that load drifting on a shared machine
hits all alike, and the median step time is kept. Peak memory is measured apart, in a fresh
process per model whose allocations above 128 KiB are returned to the system when freed
(``MALLOC_MMAP_THRESHOLD_``), for every variant (after one unmeasured run) and batch in turn,
over two steps: the growth of the peak resident set size over the size right before the first
step (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``), or on CUDA of
``torch.cuda.max_memory_allocated``.

    python -m bench.dp_training [--repeats 3] [--device cpu] [--threads 1] [--json out.json]
        [--plot docs/img/dp_training.png]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import numpy as np
import opacus
import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bench.plots import IMG_DIR, Panel, bar_charts
from securemodel.models import ModelSpec, build_model
from securemodel.workers.dpsgd import DPSGDConfig, DPSGDProgress, train_dp_sgd

N: Final[int] = 16 * 1024
CLASSES: Final[int] = 10
BATCHES: Final[tuple[int, ...]] = (64, 256, 1024)
# model -> (spec, per-sample input shape, timed steps per measurement)
MODELS: Final[dict[str, tuple[ModelSpec, tuple[int, ...], int]]] = {
    "mlp": (ModelSpec("mlp"), (8, 8), 20),
    "cnn": (ModelSpec("cnn"), (8, 8), 8),
    "transformer": (ModelSpec("transformer"), (32,), 3),
}
VARIANTS: Final[tuple[str, ...]] = ("non-private", "bookkeeping", "Opacus ghost", "Opacus hooks")
WARMUP: Final[int] = 2
SIGMA, CLIP, LR = 1.0, 1.0, 0.05

Step = Callable[[], None]


def make_data(name: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic inputs (normal features, or token ids for the transformer) and labels, fixed per model."""
    spec, shape, _ = MODELS[name]
    rng = np.random.default_rng(0)
    if spec.architecture == "transformer":
        x = rng.integers(0, 256, (N, *shape)).astype(np.float32)
    else:
        x = rng.normal(size=(N, *shape)).astype(np.float32)
    return torch.from_numpy(x).to(device), torch.from_numpy(rng.integers(0, CLASSES, N)).to(device)


def fresh_model(name: str, device: torch.device) -> nn.Module:
    spec, shape, _ = MODELS[name]
    torch.manual_seed(0)
    return build_model(spec, shape, CLASSES).to(device)


def non_private(name: str, x: torch.Tensor, y: torch.Tensor, batch: int) -> Step:
    model = fresh_model(name, x.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    criterion = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        index = torch.randint(0, N, (batch,), generator=generator).to(x.device)
        optimizer.zero_grad()
        criterion(model(x[index]), y[index]).backward()
        optimizer.step()

    return step


def opacus_readme(name: str, x: torch.Tensor, y: torch.Tensor, batch: int, mode: str) -> Step:
    model = fresh_model(name, x.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch)
    criterion: Any = nn.CrossEntropyLoss()
    engine = PrivacyEngine()
    if mode == "ghost":
        model, optimizer, criterion, loader = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader, criterion=criterion, noise_multiplier=SIGMA,
            max_grad_norm=CLIP, grad_sample_mode="ghost",
        )  # fmt: skip
    else:
        model, optimizer, loader = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=SIGMA, max_grad_norm=CLIP
        )
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

    return step


class StepClock(DPSGDProgress):
    """Progress that timestamps every noisy step the train worker's loop takes."""

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
            self.stamps = [_clock(self.device)]
        else:
            self.stamps.append(_clock(self.device))


def time_bookkeeping(name: str, x: torch.Tensor, y: torch.Tensor, batch: int, steps: int) -> list[float]:
    clock = StepClock(x.device)
    config = DPSGDConfig(SIGMA, batch / N, WARMUP + steps, CLIP, LR)
    model = fresh_model(name, x.device)
    train_dp_sgd(model, x.cpu().numpy(), y.cpu().numpy(), config, device=x.device, progress=clock, mode="bookkeeping")
    return list(np.diff(clock.stamps)[WARMUP:])


def time_steps(step: Step, steps: int, device: torch.device) -> list[float]:
    for _ in range(WARMUP):
        step()
    times = []
    for _ in range(steps):
        _sync(device)
        start = _clock(device)
        step()
        _sync(device)
        times.append(_clock(device) - start)
    return times


def measure(name: str, variant: str, x: torch.Tensor, y: torch.Tensor, batch: int, steps: int) -> list[float]:
    """Step times (s) of one variant: a fresh model, warm-up, then ``steps`` timed steps."""
    if variant == "bookkeeping":
        return time_bookkeeping(name, x, y, batch, steps)
    if variant == "non-private":
        return time_steps(non_private(name, x, y, batch), steps, x.device)
    return time_steps(opacus_readme(name, x, y, batch, variant.split()[-1]), steps, x.device)


def peak_memory(name: str, variant: str, batch: int, device: torch.device) -> float:
    """MiB the peak memory grows by over two steps of ``variant``; see the module doc."""
    x, y = make_data(name, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # the peak RSS restarts from the current RSS
        base = _status_kib("VmRSS") * 1024
    if variant == "bookkeeping":
        train_dp_sgd(fresh_model(name, device), x.cpu().numpy(), y.cpu().numpy(),
                     DPSGDConfig(SIGMA, batch / N, 2, CLIP, LR), device=device, mode="bookkeeping")  # fmt: skip
    else:
        step = (
            non_private(name, x, y, batch)
            if variant == "non-private"
            else opacus_readme(name, x, y, batch, variant.split()[-1])
        )
        step()
        step()
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _status_kib("VmHWM") * 1024
    return (peak - base) / 2**20


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    assert match is not None
    return int(match.group(1))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clock(device: torch.device) -> float:
    """Seconds: this thread's CPU time on the CPU, wall time on CUDA (see the module doc)."""
    return time.perf_counter() if device.type == "cuda" else time.thread_time()


def memory_in_fresh_process(name: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """``{variant: {batch: peak MiB}}`` of model ``name``, measured by a fresh process (see the module doc)."""
    command = [sys.executable, "-m", "bench.dp_training", "--device", args.device, "--threads", str(args.threads),
               "--memory-of", name]  # fmt: skip
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant (median step kept)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--plot", type=Path, default=IMG_DIR / "dp_training.png", help="write the figure here")
    parser.add_argument("--memory-of", metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")  # Opacus' secure-RNG and backward-hook notices
    device = torch.device(args.device)
    if args.memory_of:
        peaks: dict[str, dict[str, float]] = {}
        for variant in VARIANTS:
            peak_memory(args.memory_of, variant, BATCHES[0], device)  # one-time initialisation, not counted
            peaks[variant] = {str(b): peak_memory(args.memory_of, variant, b, device) for b in BATCHES}
        print(json.dumps(peaks))
        return

    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for name, (_, _, steps) in MODELS.items():
        x, y = make_data(name, device)
        peaks = memory_in_fresh_process(name, args)
        for batch in BATCHES:
            samples: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
            for _ in range(args.repeats):  # interleaved, so drifting load hits every variant alike
                for variant in VARIANTS:
                    samples[variant] += measure(name, variant, x, y, batch, steps)
            times = {variant: statistics.median(values) for variant, values in samples.items()}
            memory = {variant: peaks[variant][str(batch)] for variant in VARIANTS}
            row = {
                "model": name,
                "batch": batch,
                "ms": {k: round(v * 1e3, 3) for k, v in times.items()},
                "ratio": {k: round(v / times["non-private"], 2) for k, v in times.items() if k != "non-private"},
                "peakMiB": {k: round(v, 1) for k, v in memory.items()},
            }
            rows.append(row)
            print(json.dumps(row), flush=True)

    result = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": args.threads,
        "torch": torch.__version__,
        "opacus": opacus.__version__,
        "python": platform.python_version(),
        "steps": {name: steps for name, (_, _, steps) in MODELS.items()},
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
    """One panel per model: the DP ÷ non-private step-time ratio of every variant, by batch size."""
    panels = []
    for name in MODELS:
        rows = [row for row in result["rows"] if row["model"] == name]
        fastest, slowest = rows[0]["ms"]["non-private"], rows[-1]["ms"]["non-private"]
        panels.append(
            Panel(
                title=f"{name}: non-private step {fastest:.1f}–{slowest:.1f} ms",
                ylabel="DP step time ÷ non-private step time (×)",
                categories=[f"batch {row['batch']}" for row in rows],
                series={variant: [row["ratio"][variant] for row in rows] for variant in VARIANTS[1:]},
                value_format="{:.1f}×",
                reference=1.0,
                reference_label="non-private (1×)",
            )
        )
    title = f"DP-SGD step cost, device {result['device']}, {result['threads']} thread(s), lower is better"
    return bar_charts(path, title, panels)


def markdown(result: dict[str, Any]) -> str:
    """The results as a markdown table (ratio = DP step time ÷ non-private step time; memory = peak growth)."""
    header = (
        "| model | batch | non-private ms/step | book-keeping | ratio | Opacus ghost | ratio | Opacus hooks | ratio "
        "| peak MiB: non-private / book-keeping / ghost / hooks |"
    )
    setting = (
        f"device {result['device']}, {result['threads']} thread(s), torch {result['torch']}, "
        f"opacus {result['opacus']}; median step of {result['repeats']} runs × {result['steps']} steps"
    )
    lines = [
        setting,
        "",
        header,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        ms, ratio, mib = row["ms"], row["ratio"], row["peakMiB"]
        lines.append(
            f"| {row['model']} | {row['batch']} | {ms['non-private']:.2f} | {ms['bookkeeping']:.2f} ms | "
            f"**{ratio['bookkeeping']:.2f}×** | {ms['Opacus ghost']:.2f} ms | {ratio['Opacus ghost']:.2f}× | "
            f"{ms['Opacus hooks']:.2f} ms | {ratio['Opacus hooks']:.2f}× | "
            + " / ".join(f"{max(mib[v], 0.0):.0f}" for v in VARIANTS)  # growth below resolution reads 0
            + " |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
