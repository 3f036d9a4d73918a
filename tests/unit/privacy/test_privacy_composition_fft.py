"""The ledger's compositions run their FFTs on numpy (which keeps no plan), with scipy's own results."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.fft
from scipy import signal

from securemodel.privacy import composition
from securemodel.privacy.composition import _NumpyFFT, cache_clear, composed_epsilon, multiset
from securemodel.privacy.mechanisms import DpSgd

RNG = np.random.default_rng(7)


def test_the_backend_computes_what_scipy_computes() -> None:
    x, y = RNG.random(3001), RNG.random(1777)
    expected_power = scipy.fft.ifft(scipy.fft.fft(x, 8192) ** 3)
    expected_convolution = signal.fftconvolve(x, y)
    with scipy.fft.set_backend(_NumpyFFT):
        np.testing.assert_allclose(scipy.fft.ifft(scipy.fft.fft(x, 8192) ** 3), expected_power, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(signal.fftconvolve(x, y), expected_convolution, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(scipy.fft.dct(x), scipy.fft.dct(x))  # numpy has no DCT: scipy's own answers


def test_compositions_transform_with_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def counted(name: str) -> Any:
        transform = getattr(np.fft, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return transform(*args, **kwargs)

        return call

    for name in ("rfft", "irfft"):
        monkeypatch.setattr(np.fft, name, counted(name))
    cache_clear()
    mechanism = DpSgd(3.18, 0.36, 3)
    composed_epsilon(multiset({mechanism: 40}), 1e-5, lasting=True)  # a ledger's Committed claims: kept
    assert calls == ["rfft", "irfft"] * 2  # a self-composition per direction (composition._dense_power)
    calls.clear()
    composed_epsilon(multiset({mechanism: 40, DpSgd(2.0, 0.02, 50): 1}), 1e-5)
    # the new mechanism's self-composition, then its composition with the cached PLD (composition._dense_composed)
    assert calls == ["rfft", "irfft"] * 2 + ["rfft", "rfft", "irfft"] * 2


def test_the_same_figures_as_dp_accounting_with_scipys_fft() -> None:
    """dp-accounting's own self-compositions, compositions and epsilon, on scipy's FFT (no backend set)."""
    mechanisms = multiset({DpSgd(3.5304316605045396, 64 / 456, 143): 5, DpSgd(1.1, 0.004, 2500): 2})
    cache_clear()
    ours = composed_epsilon(mechanisms, 1e-5)
    stock = None
    for mechanism, count in mechanisms:
        assert isinstance(mechanism, DpSgd)
        step = composition._sgd_step_pld(mechanism.noise_multiplier, mechanism.sample_rate)
        group = step.self_compose(mechanism.steps * count)
        stock = group if stock is None else stock.compose(group)
    assert stock is not None
    assert ours == pytest.approx(stock.get_epsilon_for_delta(1e-5), rel=1e-9)
