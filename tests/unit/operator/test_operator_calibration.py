"""The run a SecureModel's spec plans, the noise calibrated for it, and the wake-ups its reconciler waits on."""

import asyncio
import concurrent.futures
import math
from typing import Any

import pytest

from securemodel.operator.secure_model.calibration import Calibrator, Plan, plan
from securemodel.operator.secure_model.spec import ModelSpecs, parse
from securemodel.operator.wakeups import Wakeups
from securemodel.privacy import dp_sgd_epsilon


def spec(source: str = "builtin://wine", batch: int = 64, **data: Any) -> ModelSpecs:
    return parse({
        "model": {"architecture": "mlp"},
        "data": {"source": source, **data},
        "privacy": {"budgetRef": "wine", "epsilon": 1.0, "accountant": "rdp"},
        "training": {"epochs": 2, "batchSize": batch},
    })  # fmt: skip


def test_the_plan_samples_the_training_part_of_the_data() -> None:
    planned = plan(spec(), 1.0, 1e-5)
    assert planned == Plan(epsilon=1.0, delta=1e-5, accountant="rdp", examples=143, batch_size=64, epochs=2)
    assert planned.sample_rate == 64 / 143, "q is over the 178 - floor(178 / 5) examples of wine's training part"
    assert planned.steps == math.ceil(2 * 143 / 64)


def test_the_plan_of_a_shard_and_of_a_pvc_file() -> None:
    assert plan(spec("builtin://breast_cancer?shard=2&of=3"), 1.0, 1e-5).examples == (569 - 569 // 5) // 3
    assert plan(spec("pvc://clinic/x.npz", samples=1000), 1.0, 1e-5).examples == 1000, "a file is trained on whole"


def test_a_plan_fails_for_a_batch_larger_than_the_training_part() -> None:
    too_big = spec("builtin://iris", batch=121)
    with pytest.raises(ValueError, match="batchSize 121 exceeds the 120 training examples of builtin://iris"):
        plan(too_big, 1.0, 1e-5)


def test_concurrent_requests_for_one_plan_share_one_calibration() -> None:
    planned = plan(spec(), 1.0, 1e-5)

    async def twice() -> list[Any]:
        with concurrent.futures.ThreadPoolExecutor(2) as executor:
            calibrator = Calibrator(executor)
            return list(await asyncio.gather(calibrator.calibrate(planned), calibrator.calibrate(planned)))

    first, second = asyncio.run(twice())
    assert first is second
    assert (first.sample_rate, first.steps) == (planned.sample_rate, planned.steps)
    assert dp_sgd_epsilon(first.noise_multiplier, first.sample_rate, first.steps, 1e-5, "rdp") <= 1.0


def test_a_wakeup_notified_after_listening_is_not_lost() -> None:
    async def scenario() -> tuple[bool, bool]:
        wakeups = Wakeups()
        with wakeups.listen("budget", "model") as changed:
            wakeups.notify("other")
            unrelated = changed.is_set()
            wakeups.notify("model")
            await asyncio.wait_for(changed.wait(), 1)
        wakeups.notify("model")  # nobody listens any more: a no-op
        return unrelated, changed.is_set()

    assert asyncio.run(scenario()) == (False, True)
