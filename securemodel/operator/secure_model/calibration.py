"""The DP-SGD run a SecureModel's spec describes, and the noise calibrated for it off the event loop."""

import asyncio
import collections
import concurrent.futures
from dataclasses import dataclass

from securemodel.data.sources import dataset_size, parse_source
from securemodel.operator.secure_model.spec import ModelSpecs
from securemodel.operator.settings import CALIBRATIONS_KEPT
from securemodel.privacy import Calibration, calibrate_dp_sgd, poisson_sample_rate, steps_for_epochs


@dataclass(frozen=True)
class Plan:
    """What the noise is calibrated for: a target (ε, δ) and the Poisson-sampled run over the training examples.

    ``examples`` is every example of the source (after sharding; a built-in source is its
    training part, :mod:`securemodel.data.sources`); ``sample_rate`` is ``batch_size / examples``
    and ``steps`` is ``ceil(epochs / sample_rate)``.
    """

    epsilon: float
    delta: float
    accountant: str
    examples: int
    batch_size: int
    epochs: int

    @property
    def sample_rate(self) -> float:
        return poisson_sample_rate(self.batch_size, self.examples)

    @property
    def steps(self) -> int:
        return steps_for_epochs(self.epochs, self.batch_size, self.examples)


def plan(spec: ModelSpecs, epsilon: float, delta: float) -> Plan:
    """The run of a SecureModel ``spec``, for a claim of (``epsilon``, ``delta``).

    Raises:
        ValueError: if the data source cannot be sized, or the batch is larger than the
            training examples (a ``SourceError`` is a ``ValueError``).
    """
    data, training = spec.data, spec.training
    if data is None:
        raise ValueError("spec.model.fromRound trains nothing: there is no DP-SGD run to plan")
    examples = dataset_size(parse_source(data.source), data.samples)
    if training.batch_size > examples:
        raise ValueError(
            f"spec.training.batchSize {training.batch_size} exceeds the {examples} training examples of {data.source}"
        )
    return Plan(
        epsilon=float(epsilon),
        delta=float(delta),
        accountant=spec.privacy.accountant,
        examples=examples,
        batch_size=training.batch_size,
        epochs=training.epochs,
    )


class Calibrator:
    """Calibrates the noise of a :class:`Plan` in a thread pool, once per plan.

    Concurrent requests for the same plan share one computation (twenty identical models
    cost one calibration), and the results of the last :data:`CALIBRATIONS_KEPT` plans are
    kept; both are exact, since calibration is a deterministic function of the plan.
    """

    def __init__(self, executor: concurrent.futures.Executor) -> None:
        self._executor = executor
        self._results: collections.OrderedDict[Plan, asyncio.Future[Calibration]] = collections.OrderedDict()

    async def calibrate(self, target: Plan) -> Calibration:
        """The calibration of ``target``: see :func:`securemodel.privacy.calibrate_dp_sgd`.

        Raises:
            CalibrationError: if the target ε cannot be met.
        """
        result = self._results.get(target)
        if result is None:
            result = asyncio.get_running_loop().run_in_executor(
                self._executor,
                calibrate_dp_sgd,
                target.epsilon,
                target.delta,
                target.examples,
                target.batch_size,
                target.epochs,
                target.accountant,
            )
            self._results[target] = result
            while len(self._results) > CALIBRATIONS_KEPT:
                self._results.popitem(last=False)
        else:
            self._results.move_to_end(target)
        return await asyncio.shield(result)
