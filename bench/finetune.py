"""Private fine-tuning from a public model vs private training from scratch: ``python -m bench.finetune``.

Pure: no cluster. For each built-in tabular case the training part (``builtin://<name>``) is cut
with the sources' shard rule into a PUBLIC part (shard 0 of 5, which no budget would cover) and
a PRIVATE part (shards 1-4). Per seed (the weight initialisation and the non-private batches;
DP-SGD's batches and noise are secret in every run, as in the worker) it trains:

* **public only**: the architecture, non-privately on the public part (the pretrained model);
* **DP from scratch**: the train worker's DP-SGD (:func:`securemodel.workers.dpsgd.train_dp_sgd`)
  on the private part from the builder's initialisation, at learning rates 0.5 and 0.1;
* **DP fine-tuning**, the same mechanism from the pretrained weights: all parameters (lr 0.5 and
  0.1); the first hidden layer frozen (``--freeze 1``); LoRA adapters of rank 4 on the hidden
  layers with the head trained fully (``--lora-rank 4 --lora-alpha 8 --lora-targets 1,3``, merged
  afterwards), with the worker's own :mod:`securemodel.workers.finetune` (lr 0.1);
* **non-private**: plain SGD on the private part from scratch (no privacy: the ceiling).

Every DP run of one ε uses the same (σ, q, steps), calibrated by the operator's
:func:`securemodel.privacy.calibration.calibrate_dp_sgd` for batch 64 and 20 epochs of the
private part at δ = 1e-5, so "the same ε" is the same mechanism. Accuracy is measured as the
compress worker does, on all of the public evaluation part (``builtin://<name>?part=evaluation``,
never trained on, disjoint from both parts). Both learning rates are reported rather than the
better one picked on the evaluation data. The table goes to the ``## Private fine-tuning`` section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from securemodel.data.loading import Dataset, load_dataset, load_evaluation
from securemodel.models import ModelPredictor, ModelRecord, ModelSpec, build_model
from securemodel.privacy.calibration import calibrate_dp_sgd
from securemodel.workers.dpsgd import DPSGDConfig, train_dp_sgd
from securemodel.workers.finetune import LoraSettings, add_lora, freeze, merge_lora

REPO = Path(__file__).resolve().parents[1]
SECTION: Final = "## Private fine-tuning"
CASES: Final[dict[str, tuple[str, ModelSpec]]] = {
    "breast_cancer mlp [64, 32]": ("breast_cancer", ModelSpec("mlp", params={"hidden": [64, 32]})),
    "digits mlp [128, 64]": ("digits", ModelSpec("mlp", params={"hidden": [128, 64]})),
}
SHARDS: Final = 5  # shard 0 public, shards 1..4 private
DELTA, BATCH, EPOCHS, MAX_GRAD_NORM = 1e-5, 64, 20, 1.0
PLAIN_LR, PLAIN_EPOCHS, PRETRAIN_EPOCHS = 0.1, 20, 40
LORA: Final = LoraSettings(rank=4, alpha=8.0, targets=("1", "3"))
VARIANTS: Final = ["public only", "DP from scratch, lr 0.5", "DP from scratch, lr 0.1", "DP fine-tune: all, lr 0.5",
                   "DP fine-tune: all, lr 0.1", "DP fine-tune: layer 1 frozen, lr 0.1", "DP fine-tune: LoRA r=4, lr 0.1",
                   "non-private"]  # fmt: skip


def parts(name: str) -> tuple[Dataset, Dataset]:
    """(public, private): shard 0 of :data:`SHARDS`, and shards 1.. concatenated (same public input map)."""
    shards = [load_dataset(f"builtin://{name}?shard={i}&of={SHARDS}") for i in range(SHARDS)]
    private = Dataset(
        np.concatenate([s.x_train for s in shards[1:]]),
        np.concatenate([s.y_train for s in shards[1:]]),
        shards[0].num_classes,
        shards[0].standardization,
    )
    return shards[0], private


def train_plain(model: nn.Module, data: Dataset, epochs: int, seed: int) -> None:
    """Non-private SGD, shuffled batches of :data:`BATCH`, mean cross-entropy."""
    x = torch.as_tensor(data.model_inputs(data.x_train))
    y = torch.as_tensor(data.y_train, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=PLAIN_LR)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(y), generator=generator).split(BATCH):
            optimizer.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    model.eval()


def accuracy(spec: ModelSpec, model: nn.Module, data: Dataset, x_eval: np.ndarray, y_eval: np.ndarray) -> float:
    """Accuracy of ``model`` as served (its record's predictor) on the public evaluation part."""
    record = ModelRecord.from_module(spec, model, data.input_shape, data.num_classes, data.standardization)
    result = ModelPredictor(record, "bench").accuracy(x_eval, y_eval)
    assert result is not None
    return result


def dp_variants(pretrained: dict[str, torch.Tensor]) -> dict[str, tuple[float, Callable[[nn.Module], None]]]:
    """Each DP variant's learning rate, and how it prepares the freshly built model before DP-SGD."""

    def start(model: nn.Module) -> None:
        model.load_state_dict(pretrained)

    def frozen(model: nn.Module) -> None:
        start(model)
        freeze(model, ["1"])

    def lora(model: nn.Module) -> None:
        start(model)
        add_lora(model, LORA)

    return {
        "DP from scratch, lr 0.5": (0.5, lambda model: None),
        "DP from scratch, lr 0.1": (0.1, lambda model: None),
        "DP fine-tune: all, lr 0.5": (0.5, start),
        "DP fine-tune: all, lr 0.1": (0.1, start),
        "DP fine-tune: layer 1 frozen, lr 0.1": (0.1, frozen),
        "DP fine-tune: LoRA r=4, lr 0.1": (0.1, lora),
    }


def bench_case(name: str, spec: ModelSpec, epsilons: list[float], seeds: int) -> dict[str, Any]:
    public, private = parts(name)
    x_eval, y_eval = load_evaluation(f"builtin://{name}?part=evaluation", training=f"builtin://{name}")
    n = len(private.y_train)
    calibrations = {eps: calibrate_dp_sgd(eps, DELTA, n, BATCH, EPOCHS) for eps in epsilons}
    shape, classes = private.input_shape, private.num_classes
    runs: dict[str, dict[str, list[float]]] = {str(eps): {v: [] for v in VARIANTS} for eps in epsilons}
    for seed in range(seeds):
        torch.manual_seed(seed)
        pretrained_model = build_model(spec, shape, classes)
        train_plain(pretrained_model, public, PRETRAIN_EPOCHS, seed)
        pretrained = {k: v.clone() for k, v in pretrained_model.state_dict().items()}
        public_only = accuracy(spec, pretrained_model, public, x_eval, y_eval)
        torch.manual_seed(seed)
        plain = build_model(spec, shape, classes)
        train_plain(plain, private, PLAIN_EPOCHS, seed)
        non_private = accuracy(spec, plain, private, x_eval, y_eval)
        for eps, calibration in calibrations.items():
            row = runs[str(eps)]
            row["public only"].append(public_only)
            row["non-private"].append(non_private)
            for variant, (rate, prepare) in dp_variants(pretrained).items():
                config = DPSGDConfig(
                    calibration.noise_multiplier, calibration.sample_rate, calibration.steps, MAX_GRAD_NORM, rate
                )
                torch.manual_seed(seed)
                model = build_model(spec, shape, classes)
                prepare(model)
                lora = "LoRA" in variant
                x = private.model_inputs(private.x_train)
                mode = "bookkeeping" if lora else None
                train_dp_sgd(model, x, private.y_train, config, device=torch.device("cpu"), mode=mode)
                if lora:
                    merge_lora(model)
                row[variant].append(accuracy(spec, model, private, x_eval, y_eval))
    return {
        "public": len(public.y_train),
        "private": n,
        "evaluation": len(y_eval),
        "calibration": {
            str(eps): {"sigma": round(c.noise_multiplier, 3), "q": round(c.sample_rate, 4), "steps": c.steps}
            for eps, c in calibrations.items()
        },
        "runs": runs,
    }


def _cell(values: list[float]) -> str:
    mean = statistics.fmean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {spread:.3f}"


def section(result: dict[str, Any]) -> str:
    """This benchmark's section of docs/benchmarks.md."""
    columns = [(name, eps) for name, case in result["cases"].items() for eps in case["runs"]]
    cases = result["cases"]
    lines = [
        SECTION,
        "",
        (
            "`python -m bench.finetune` (`bench/finetune.py`; pure, no cluster; CPU, "
            f"{result['threads']} torch thread, {result['seeds']} seeds, the run took {result['seconds']:.0f} s). "
            f"Each built-in dataset's training part is cut by the shard rule into a public part (shard 0 of "
            f"{SHARDS}) and a private part (shards 1–{SHARDS - 1}); accuracy is on all of the public evaluation "
            "part (`?part=evaluation`, never trained on). *public only*: the architecture trained non-privately "
            f"on the public part ({PRETRAIN_EPOCHS} epochs, SGD lr {PLAIN_LR}, batch {BATCH}): the pretrained "
            "model. Every DP row is the train worker's DP-SGD on the private part with the SAME (σ, q, steps) for "
            f"a column's ε, calibrated by the operator's `calibrate_dp_sgd` at δ = {DELTA:g} (batch {BATCH}, "
            f"{EPOCHS} epochs, C = {MAX_GRAD_NORM}, SGD at the row's learning rate): from the builder's "
            "initialisation (*from scratch*) or from the pretrained weights with all parameters trained, the "
            "first hidden layer frozen (`--freeze 1`), or LoRA adapters of rank 4, α = 8 on both hidden layers "
            "with the head trained fully (`--lora-targets 1,3`, merged before evaluation). *non-private*: plain "
            f"SGD on the private part from scratch ({PLAIN_EPOCHS} epochs, lr {PLAIN_LR}). Mean ± standard "
            "deviation over seeds (the seed sets the initialisation and the non-private batches; DP-SGD's batches "
            "and noise are secret, so no DP run can be repeated). Both learning rates are shown for the two "
            "baselines instead of picking the better one on the evaluation data."
        ),
        "",
        (
            f"Python {result['python']}, torch {result['torch']}, {os.cpu_count()} shared vCPUs (load average "
            f"{result['load']:.1f} at the end of the run; accuracy does not depend on it)."
        ),
        "",
        "| accuracy (public evaluation) | " + " | ".join(f"{name}, ε = {float(eps):g}" for name, eps in columns) + " |",
        "| --- | " + " | ".join("---:" for _ in columns) + " |",
        "| examples: public / private / evaluation | "
        + " | ".join(
            f"{cases[name]['public']} / {cases[name]['private']} / {cases[name]['evaluation']}" for name, _ in columns
        )
        + " |",
        "| σ, q, steps | "
        + " | ".join(
            "{sigma}, {q}, {steps}".format(**cases[name]["calibration"][eps]) for name, eps in columns
        )
        + " |",
    ]
    for variant in VARIANTS:
        cells = " | ".join(_cell(cases[name]["runs"][eps][variant]) for name, eps in columns)
        lines.append(f"| {variant} | {cells} |")
    lines += ["", "What the numbers mean: [docs/fine-tuning.md](fine-tuning.md#what-the-benchmark-shows)."]
    return "\n".join(lines)


def write(document: Path, text: str) -> None:
    """Replace this benchmark's section of ``document`` (append it if missing)."""
    current = document.read_text(encoding="utf-8") if document.exists() else ""
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(current):
        updated = pattern.sub(lambda _: text + "\n\n", current)
    else:
        updated = f"{current.rstrip()}\n\n{text}"
    document.write_text(updated.rstrip() + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.finetune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 4.0], help="ε of every DP run")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per variant")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    started = time.perf_counter()
    cases = {}
    for name, (dataset, spec) in CASES.items():
        cases[name] = bench_case(dataset, spec, args.epsilons, args.seeds)
        print(name, json.dumps(cases[name]["runs"]), flush=True)
    result = {
        "threads": args.threads,
        "seeds": args.seeds,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load": os.getloadavg()[0],
        "seconds": time.perf_counter() - started,
        "cases": cases,
    }
    text = section(result)
    write(args.output, text)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
