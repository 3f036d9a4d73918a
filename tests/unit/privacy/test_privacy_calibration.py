"""Noise calibration: never above the target, within the stated tolerance, and the q / steps conventions."""

from __future__ import annotations

from fractions import Fraction

import pytest

from securemodel.privacy.accounting import dp_sgd_epsilon
from securemodel.privacy.calibration import (
    SIGMA_MAX,
    SIGMA_MIN,
    SIGMA_RTOL,
    Calibration,
    CalibrationError,
    calibrate_dp_sgd,
    calibrate_noise,
    poisson_sample_rate,
    steps_for_epochs,
)


def assert_calibrated(calibration: Calibration, target: float) -> None:
    """The stated guarantee: epsilon <= target, and a sigma SIGMA_RTOL lower exceeds the target."""
    sigma, q, steps, delta, accountant = (
        calibration.noise_multiplier,
        calibration.sample_rate,
        calibration.steps,
        calibration.delta,
        calibration.accountant,
    )
    assert calibration.epsilon == dp_sgd_epsilon(sigma, q, steps, delta, accountant)
    assert calibration.epsilon <= target
    assert dp_sgd_epsilon(sigma / (1 + SIGMA_RTOL), q, steps, delta, accountant) > target


@pytest.mark.parametrize(
    ("target", "delta", "q", "steps", "accountant"),
    [
        (2.0, 1e-5, 64 / 455, 143, "prv"),
        (2.0, 1e-5, 64 / 455, 143, "rdp"),
        (1.0, 1e-5, 0.01, 10_000, "prv"),
        (8.0, 1e-5, 0.04, 2250, "rdp"),
        (0.05, 1e-6, 0.001, 100, "rdp"),
    ],
)
def test_never_exceeds_the_target_and_is_within_tolerance(
    target: float, delta: float, q: float, steps: int, accountant: str
) -> None:
    calibration = calibrate_noise(target, delta, q, steps, accountant)
    assert (calibration.sample_rate, calibration.steps, calibration.delta) == (q, steps, delta)
    assert calibration.accountant == accountant
    assert_calibrated(calibration, target)


def test_recovers_the_noise_of_a_published_rdp_epsilon() -> None:
    """TF Privacy's compute_dp_sgd_privacy_test: sigma 1.3, q 150/60000, 6000 steps, delta 1e-5
    gives epsilon 0.7242234026109595 (RDP). Calibrating to it gives sigma 1.3 within SIGMA_RTOL."""
    calibration = calibrate_noise(0.7242234026109595, 1e-5, 150 / 60_000, 6000, "rdp")
    assert calibration.noise_multiplier == pytest.approx(1.3, rel=SIGMA_RTOL)


def test_the_tight_accountant_needs_less_noise() -> None:
    prv = calibrate_noise(2.0, 1e-5, 64 / 455, 143, "prv")
    rdp = calibrate_noise(2.0, 1e-5, 64 / 455, 143, "rdp")
    assert prv.noise_multiplier < rdp.noise_multiplier


def test_an_unreachable_target_is_a_clear_error() -> None:
    with pytest.raises(CalibrationError, match=r"unreachable.*256"):
        calibrate_noise(1e-3, 1e-5, 1.0, 100, "rdp")
    assert SIGMA_MAX == 256.0


def test_a_target_met_by_the_least_noise_gets_the_least_noise() -> None:
    calibration = calibrate_noise(20.0, 1e-5, 0.001, 1, "rdp")
    assert calibration.noise_multiplier == SIGMA_MIN
    assert calibration.epsilon <= 20.0


def test_calibrate_dp_sgd_derives_q_and_steps_from_the_training_spec() -> None:
    calibration = calibrate_dp_sgd(2.0, 1e-5, dataset_size=455, batch_size=64, epochs=20, accountant="rdp")
    assert calibration.sample_rate == 64 / 455
    assert calibration.steps == 143  # ceil(20 * 455 / 64) = ceil(142.19)
    assert_calibrated(calibration, 2.0)


@pytest.mark.parametrize(
    ("epochs", "batch_size", "dataset_size", "steps"),
    [
        (20, 64, 455, 143),
        (15, 150, 60_000, 6000),  # exact: 15 / (150 / 60000) is not computed in floating point
        (1.2, 100, 10_000, 120),
        (0.1, 1, 10, 1),  # 0.1 read as one tenth, not as the float just above it
        (Fraction(1, 3), 1, 9, 3),
        (5, 64, 10_000, 782),
        (1, 455, 455, 1),
    ],
)
def test_steps_are_ceil_of_epochs_over_q(epochs: float, batch_size: int, dataset_size: int, steps: int) -> None:
    assert steps_for_epochs(epochs, batch_size, dataset_size) == steps


def test_sample_rate_is_batch_over_dataset() -> None:
    assert poisson_sample_rate(64, 455) == 64 / 455
    assert poisson_sample_rate(455, 455) == 1.0


@pytest.mark.parametrize(
    ("batch_size", "dataset_size", "message"),
    [
        (0, 10, "batch_size"),
        (11, 10, "must not exceed"),
        (1, 0, "dataset_size"),
        (True, 10, "batch_size"),
        (1.0, 10, "batch_size"),
    ],
)
def test_invalid_batch_or_dataset_is_refused(batch_size: object, dataset_size: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        poisson_sample_rate(batch_size, dataset_size)  # type: ignore[arg-type]


@pytest.mark.parametrize("epochs", [0, -1, float("inf"), float("nan"), True])
def test_invalid_epochs_are_refused(epochs: object) -> None:
    with pytest.raises(ValueError, match="epochs"):
        steps_for_epochs(epochs, 10, 100)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((0.0, 1e-5, 0.1, 10), "target_epsilon"),
        ((1.0, 0.0, 0.1, 10), "delta"),
        ((1.0, 1e-5, 0.0, 10), "sample_rate"),
        ((1.0, 1e-5, 0.1, 0), "steps"),
    ],
)
def test_invalid_calibration_targets_are_refused(arguments: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        calibrate_noise(*arguments)
