"""Composed vs summed privacy budgets, and what composing costs the operator: ``python -m bench.composition``.

Pure: no cluster. Three measurements, written to the ``## Privacy budget composition`` section of
docs/benchmarks.md:

* How many claims of epsilon = 0.5, 1 and 2 (DP-SGD with the breast_cancer example's training
  shape: batch 64 of 456, 20 epochs, noise calibrated to the claim at delta 1e-5) an epsilon = 10,
  delta = 1e-5 budget grants when the ledger composes them (PLD at the budget's lifetime delta)
  and when it sums them, and the composed epsilon of N such claims.
* Milliseconds per grant decision (:func:`securemodel.privacy.submit` of one more claim) on
  ledgers of 10, 100 and 1000 entries, warm (the composition cache holds the ledger's current
  multiset, as in a running operator) and cold (cache empty, as after a restart); with every
  claim of one shape, and with claims of 20 shapes. Also the whole pure part of one ledger
  transaction, warm: verify the chain, decide, compute the totals and seal the status.
* Bytes of status per ledger entry, and how many entries fit before the object nears etcd's
  1.5 MiB request limit, with and without compaction.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from securemodel.privacy import (
    BudgetSpec,
    Claim,
    ClaimState,
    Consumer,
    DpSgd,
    Ledger,
    calibrate_dp_sgd,
    compact,
    composed_epsilon,
    status_fields,
    submit,
    verify,
)
from securemodel.privacy.composition import cache_clear, multiset, standalone_epsilon

REPO = Path(__file__).resolve().parents[1]
SECTION: Final = "## Privacy budget composition"
DELTA: Final = 1e-5
BUDGET: Final = 10.0
NOW: Final = "2026-11-21T10:00:00Z"
# etcd's default request limit, less room for the spec, metadata, conditions and managed fields.
ETCD_LIMIT: Final = 1_572_864
OVERHEAD: Final = 64 * 1024
KEY: Final = bytes(32)


def example_run(epsilon: float) -> DpSgd:
    """The breast_cancer example's DP-SGD run calibrated to ``epsilon`` at ``DELTA``."""
    calibration = calibrate_dp_sgd(epsilon, DELTA, dataset_size=456, batch_size=64, epochs=20)
    return DpSgd(calibration.noise_multiplier, calibration.sample_rate, calibration.steps)


def consumer(index: int) -> Consumer:
    return Consumer(
        "SecureModel",
        f"clinic-{index % 7}",
        f"tumor-classifier-{index}",
        f"{index:08x}-2f1e-4c7a-9d1b-5e6f7a8b9c0d",
        "3f9a2c1b",
    )


def granted(mechanism: DpSgd, epsilon: float, arrivals: int, policy: str) -> int:
    """Claims granted when ``arrivals`` claims of ``mechanism`` arrive on an epsilon = 10 budget."""
    spec = BudgetSpec(BUDGET, DELTA, policy)  # type: ignore[arg-type]
    ledger = Ledger()
    for index in range(arrivals):
        ledger = submit(ledger, spec, consumer(index), epsilon, DELTA, NOW, mechanism=mechanism).ledger
    return sum(1 for claim in ledger.claims if claim.state is ClaimState.RESERVED)


def composed_vs_summed() -> dict[str, Any]:
    rows = []
    for epsilon in (0.5, 1.0, 2.0):
        run = example_run(epsilon)
        summed = math.floor(BUDGET / epsilon + 1e-9)
        arrivals = 12 * summed  # more than composition can ever grant
        rows.append(
            {
                "epsilon": epsilon,
                "sigma": run.noise_multiplier,
                "steps": run.steps,
                "summed": summed,
                "fcfs": granted(run, epsilon, arrivals, "fcfs"),
                "dpf": granted(run, epsilon, arrivals, "dpf"),
            }
        )
    two = example_run(2.0)
    curve = {n: composed_epsilon(multiset([two] * n), DELTA) for n in (1, 2, 5, 10, 15, 16, 17)}
    return {"rows": rows, "curve": curve}


def ledger_of(size: int, shapes: int) -> tuple[Ledger, BudgetSpec, list[DpSgd]]:
    """``size`` settled-or-running entries (4 in 5 Committed, the rest Reserved) of ``shapes`` DP-SGD shapes."""
    runs = [DpSgd(3.5304316605045396, 64 / 456, 143 + 7 * shape) for shape in range(shapes)]
    claims = tuple(
        Claim(
            consumer(i),
            2.0,
            DELTA,
            ClaimState.RESERVED if i % 5 == 4 else ClaimState.COMMITTED,
            NOW,
            dispatched=NOW,
            started=NOW,
            mechanism=runs[i % shapes],
        )
        for i in range(size)
    )
    return Ledger(claims, BUDGET), BudgetSpec(1e6, DELTA), runs


def warm_runs(prepare: Callable[[], None], action: Callable[[], object], repeat: int) -> float:
    """Median milliseconds of ``action`` over ``repeat`` runs, each after ``prepare`` (not timed)."""
    times = []
    for _ in range(repeat):
        prepare()
        started = time.perf_counter()
        action()
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def decision_costs(sizes: list[int], repeat: int) -> list[dict[str, Any]]:
    results = []
    for shapes in (1, 20):
        for size in sizes:
            ledger, spec, runs = ledger_of(size - 1, shapes)
            newcomer = consumer(size)
            status = json.loads(json.dumps(status_fields(ledger, spec, key=KEY)))

            def decide(
                ledger: Ledger = ledger, spec: BudgetSpec = spec, run: DpSgd = runs[0], new: Consumer = newcomer
            ) -> object:
                return submit(ledger, spec, new, 2.0, DELTA, NOW, mechanism=run)

            def transaction(
                status: dict[str, Any] = status, spec: BudgetSpec = spec, run: DpSgd = runs[0], new: Consumer = newcomer
            ) -> object:
                read = verify(status, key=KEY)
                outcome = submit(read, spec, new, 2.0, DELTA, NOW, mechanism=run)
                return status_fields(outcome.ledger, spec, key=KEY)

            def steady(ledger: Ledger = ledger, spec: BudgetSpec = spec, run: DpSgd = runs[0]) -> None:
                """The cache as a running operator left it: its last write's totals, and the last claim of
                this shape it decided (so one claim of the shape is known, not this ledger with it)."""
                cache_clear()
                standalone_epsilon(run, DELTA)
                status_fields(ledger, spec, key=KEY)

            results.append(
                {
                    "shapes": shapes,
                    "entries": size,
                    "warm_ms": warm_runs(steady, decide, repeat),
                    "cold_ms": warm_runs(cache_clear, decide, max(1, repeat // 2)),
                    "transaction_ms": warm_runs(steady, transaction, repeat),
                }
            )
            print(results[-1], flush=True)
    return results


def sizes() -> dict[str, float]:
    """Status bytes per entry (a DP-SGD claim, settled, with both marks) and per compacted entry."""
    ledger, spec, _ = ledger_of(1000, 20)
    settled = Ledger(tuple(c if c.state is ClaimState.COMMITTED else c.__class__(**{**c.__dict__, "state": ClaimState.COMMITTED}) for c in ledger.claims), ledger.epsilon_unlocked)  # fmt: skip
    full = len(json.dumps(status_fields(settled, spec, key=KEY), separators=(",", ":")))
    folded = len(json.dumps(status_fields(compact(settled, keep=0, key=KEY), spec, key=KEY), separators=(",", ":")))
    per_entry, per_folded = full / 1000, folded / 1000
    room = ETCD_LIMIT - OVERHEAD
    return {
        "per_entry": per_entry,
        "per_folded": per_folded,
        "fit": room / per_entry,
        "fit_compacted": (room - 200 * per_entry) / per_folded + 200,
    }


def section(curve: dict[str, Any], costs: list[dict[str, Any]], size: dict[str, float], seconds: float) -> str:
    load = os.getloadavg()[0]
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    lines = [
        SECTION,
        "",
        (
            f"`python -m bench.composition` (pure, no cluster), {when}, Python {platform.python_version()} on "
            f"{platform.machine()}, {seconds:.0f} s. A budget of ε = {BUDGET:g}, δ = {DELTA:g}; claims are DP-SGD runs "
            "of the breast_cancer example's shape (batch 64 of 456, 20 epochs), noise calibrated to each claim's ε at "
            "δ = 1e-5, arriving until the budget is full. *Summed* is what the ledger granted before (ε added up, "
            "each claim charged its own δ); *composed* is the PLD composition of every Committed and Reserved "
            "mechanism at the budget's lifetime δ (`securemodel/privacy/composition.py`)."
        ),
        "",
        "| claim ε | σ | steps | granted, summed | granted, composed (fcfs) | granted, composed (dpf) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in curve["rows"]:
        lines.append(
            f"| {row['epsilon']:g} | {row['sigma']:.4f} | {row['steps']} | {row['summed']} | {row['fcfs']} | "
            f"{row['dpf']} |"
        )
    lines += [
        "",
        "Composed ε of N claims of ε = 2 at δ = 1e-5 (summing charges 2N and δ N·1e-5): "
        + ", ".join(f"N = {n}: {value:.3f}" for n, value in curve["curve"].items())
        + ".",
        "",
        (
            "Cost of one grant decision (`submit` of one more claim, which composes the ledger with it), median "
            "milliseconds. *Warm*: the cache holds what the operator's last write computed; *cold*: empty cache, "
            "as after an operator restart. *Transaction*: warm, the whole pure part of one ledger write (verify the "
            "chain of the status read, decide, compute the totals, seal the status written)."
        ),
        "",
        "| claim shapes | entries | decision, warm (ms) | decision, cold (ms) | transaction, warm (ms) |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for cost in costs:
        lines.append(
            f"| {cost['shapes']} | {cost['entries']} | {cost['warm_ms']:.1f} | {cost['cold_ms']:.1f} | "
            f"{cost['transaction_ms']:.1f} |"
        )
    ratios = [row["fcfs"] / row["summed"] for row in curve["rows"]]
    worst = max(costs, key=lambda cost: cost["cold_ms"])
    lines += [
        "",
        (
            f"Reading: composing grants {min(ratios):.0f}× to {max(ratios):.0f}× the claims summing granted on the "
            "same budget, more the smaller the claims: the composed ε of N alike claims grows roughly like √N, the "
            "sum like N, and the budget's δ is spent once instead of per claim. dpf grants what fcfs does here "
            "because all claims are alike. A warm decision is one convolution of the ledger's cached composition "
            "with the new claim, plus bookkeeping linear in the entries; on a ledger of one claim shape it is one "
            "self-composition from scratch instead, warm or cold, since compositions of one shape are not kept "
            "unless they are the Committed claims' (they held 17 MB each at the peak of a burst of 1000 models); "
            "a transaction adds parsing, verifying "
            "and sealing every entry. A cold cache recomposes the ledger: one self-composition and one convolution "
            f"per distinct claim shape ({worst['cold_ms'] / 1000:.1f} s for {worst['shapes']} shapes on "
            f"{worst['entries']} entries), once per budget after an operator restart; after a release, or a commit "
            "of fewer steps than reserved, it starts from the cached composition of the Committed claims. The "
            f"machine was shared with other work (load average {load:.1f} on {os.cpu_count()} CPUs at the end), "
            "so the timings are indicative."
        ),
        "",
        (
            f"Status size: {size['per_entry']:.0f} bytes of JSON per DP-SGD entry with its chain digests, "
            f"{size['per_folded']:.0f} per entry once compacted. Leaving {OVERHEAD // 1024} KiB for the rest of the "
            f"object, about {size['fit']:.0f} entries fit under etcd's 1.5 MiB request limit without compaction, and "
            f"about {size['fit_compacted']:.0f} with compaction keeping the newest 200 entries whole "
            "(`securemodel/privacy/compaction.py`)."
        ),
    ]
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
    parser = argparse.ArgumentParser(prog="python -m bench.composition", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000], help="ledger entries")
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement; the median is reported")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    curve = composed_vs_summed()
    print(curve, flush=True)
    costs = decision_costs(args.sizes, args.repeat)
    size = sizes()
    print(size, flush=True)
    text = section(curve, costs, size, time.perf_counter() - started)
    write(args.output, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
