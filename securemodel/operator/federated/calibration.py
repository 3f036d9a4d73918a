"""The DP-SGD run of one silo over all rounds, in the form the SecureModel calibration takes (pure).

For silo *k* with *n_k* training examples (all of its shard: nothing is held out), batch *B*
and *E* local epochs: *q_k = B / n_k*, *s_k = ⌈E · n_k / B⌉* noisy steps per round, and the noise
is calibrated (:class:`securemodel.operator.secure_model.calibration.Calibrator`, the same search
and accountant as a SecureModel) for exactly *R · s_k* steps at *q_k*: the :class:`Plan`'s epochs
are the exact fraction *R · s_k · B / n_k*, whose steps are *R · s_k*.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from securemodel.data.sources import dataset_size, parse_source
from securemodel.operator.federated.spec import RoundSpec, SiloSpec
from securemodel.operator.secure_model.calibration import Plan
from securemodel.privacy import steps_for_epochs


@dataclass(frozen=True)
class SiloPlan:
    """A silo's training examples, its steps per round, and the plan its noise is calibrated for."""

    examples: int
    steps_per_round: int
    plan: Plan


def silo_plan(spec: RoundSpec, silo: SiloSpec) -> SiloPlan:
    """The run of ``silo`` over ``spec.rounds`` rounds.

    Raises:
        ValueError: if the data cannot be sized, or the batch is larger than the training examples.
    """
    examples = dataset_size(parse_source(silo.source), silo.samples)
    if spec.batch_size > examples:
        raise ValueError(
            f"spec.training.batchSize {spec.batch_size} exceeds the {examples} training examples of silo "
            f"{silo.name} ({silo.source})"
        )
    per_round = steps_for_epochs(spec.local_epochs, spec.batch_size, examples)
    epochs = Fraction(spec.rounds * per_round * spec.batch_size, examples)
    plan = Plan(spec.epsilon, spec.delta, spec.accountant, examples, spec.batch_size, epochs)  # type: ignore[arg-type]
    assert plan.steps == spec.rounds * per_round
    return SiloPlan(examples, per_round, plan)
