"""The epsilon a multiset of mechanisms releases together, at a given delta.

Guarantee: running every mechanism of the multiset on the same dataset (each
once per count, in any order, each possibly chosen after seeing the outputs of
the others) is (``composed_epsilon(...)``, ``delta``)-DP under
add-or-remove-one adjacency. The figure is an upper bound, never an estimate
from below:

* DP-SGD entries are composed as privacy loss distributions (PLD) with
  dp-accounting, built exactly as ``dp_accounting.pld.PLDAccountant`` builds
  them for ``PoissonSampledDpEvent(q, GaussianDpEvent(sigma))`` composed
  ``steps * count`` times (pessimistic connect-the-dots discretisation; the
  tails truncated in composition go to the infinity mass): an upper bound at
  any discretisation interval. We use the PLD objects directly rather than the
  accountant so that a composed PLD can be cached and composed further (the
  accountant keeps its PLD private); a unit test checks the two agree.
* A generic (epsilon_i, delta_i) entry is a mechanism of which nothing is known
  but its guarantee. Every (epsilon_i, delta_i)-DP mechanism is a
  post-processing of the randomized-response pair of Kairouz, Oh and Viswanath
  (ICML 2015): loss +inf with probability delta_i, +epsilon_i with probability
  (1 - delta_i) / (1 + e^-epsilon_i), -epsilon_i otherwise
  (``from_privacy_parameters`` in dp-accounting). Composing that PLD is
  therefore sound for any such mechanism, and it is the tightest bound that
  holds for all of them (it is what the optimal composition theorem composes).
  The delta_i of these entries add up (to first order) in the infinity mass, so
  they eat into the budget's lifetime delta: two generic entries at the
  budget's delta can never both fit. That is the truth about black boxes, not
  an artefact.
* Basic composition is also sound: the DP-SGD part at ``delta - sum(delta_i)``
  plus ``sum(epsilon_i)`` (exact decimal sums). It is looser than the PLD for
  many generic entries, but exact where the PLD's rounding of epsilon_i up to
  the grid would over-charge (one generic claim of the whole budget must fit
  the budget). Both being upper bounds, we return the smaller.

Discretisation: :data:`DISCRETIZATION` = 1e-4, the grid the operator calibrates
noise on (:data:`securemodel.privacy.accounting.PLD_VALUE_DISCRETIZATION_INTERVAL`).
Pessimistic rounding makes a coarser grid only looser, and that matters at the
boundary: at 1e-3 the example's claim calibrated to ε = 2 composes to 2.00009,
so it would not fit a budget of exactly ε = 2 (measured); on the calibration's
own grid it composes to what it was calibrated for. 1e-3 would cost a tenth of
the time and memory (15 claims: 9.3436 instead of 9.3430). The figure depends
slightly (last digits) on the order in which the cache composed the multiset;
every order gives an upper bound.

Memory: the convolutions' FFTs run on ``numpy.fft`` (:class:`_NumpyFFT`, a scipy.fft backend set
only around a composition, in its thread). scipy's own FFT keeps the plan of every transform
length it computed (16 of them, about 70 MB each at a length of three million), and a growing
ledger composes at ever new lengths: 1000 claims left the operator 150 MB larger for good
(measured). numpy's FFT keeps no plan, costs about 1.5 times as long per transform, and agrees
with scipy's to 2e-16 relative.

A group of identical DP-SGD runs is one self-composition of the step's PLD, computed as
dp-accounting's ``self_compose`` computes it (its truncation bounds, its infinity mass) but with
the real FFT (:func:`_self_composed`): dp-accounting raises the complex FFT of the real
probabilities to the power, holding several complex arrays of the transform's length at once:
for a thousand claims of three steps, a process's peak rose 75 MiB around a 17 MB result, and
33 MiB less with the real FFT, which holds the same spectrum in half the space, raised to the
power in place (measured; half the time too). Composing two PLDs (:func:`_composed`) is
dp-accounting's ``compose`` with the convolution computed as scipy's ``fftconvolve`` computes it,
but with the spectra multiplied in place and freed as soon as they are used: bit for bit the same
PLD, with less than half the memory above the result. The epsilon of a composition is
dp-accounting's walk over its points (:func:`epsilon_for_delta`), run in numpy instead of a Python
loop: the same figure, bit for bit here, ten to twenty times faster.

Cost: composing is a convolution per distinct mechanism not already in a
cached composition. Identical mechanisms are self-composed once
(``self_compose(steps * count)``); composed PLDs of recent multisets are kept,
and a new multiset starts from the largest cached one it contains, so granting
one more claim costs one convolution. A multiset of one mechanism (a ledger of
identical claims) is always self-composed from scratch instead: one transform
pair of the result's length, and no base kept beside the result (17 MB at 1000
claims); its figure is then the same whatever the cache held (and tighter: one
truncation, not one per step of a chain). Such a composition is kept only if it
is ``lasting``: kept passing ones held their megabytes while the next one was
composed. That is a trade of time for memory, measured at 1000 entries of one
shape (``bench.composition``, side by side): a warm grant decision 418 ms instead
of 258 (the cached base it grew from is gone), a cold one 486 instead of 820; the
operator's peak in a burst of 1000 models 280 MiB instead of 335.

A ledger's Committed claims are composed ``lasting`` (kept while the bounds
allow); every other composition passes: one that a more recently used
composition contains is kept only within :data:`_PASSING_CACHE_BYTES` (the
newest and the base it grew from always are), as a grant chain uses each step
once, as the base of the next. Thread-safe (one lock).
"""

from __future__ import annotations

import functools
import math
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Any, Final, TypeAlias

import numpy as np
import scipy.fft
from dp_accounting.pld import common as pld_common
from dp_accounting.pld import pld_pmf
from dp_accounting.pld import privacy_loss_distribution as pld_module

from securemodel.privacy.accounting import PLD_VALUE_DISCRETIZATION_INTERVAL
from securemodel.privacy.mechanisms import DpSgd, EpsilonDelta, Mechanism, sort_key

PLD: TypeAlias = pld_module.PrivacyLossDistribution

DISCRETIZATION: Final[float] = PLD_VALUE_DISCRETIZATION_INTERVAL
# Composed PLDs kept: at most this many, holding at most _PLD_CACHE_BYTES of probabilities together
# (the newest is kept whatever its size). A PLD's support grows with what it composes: 0.3-2 MB for
# a few claims, 19 MB for 1000 claims of 3 steps at q = 0.45 (two float64 arrays of 1.2 million).
_PLD_CACHE_SIZE: Final = 16
_PLD_CACHE_BYTES: Final = 64 * 1024 * 1024
# Of them, the passing ones (not ``lasting``: a grant's steps, its probes) that a more recently used one
# contains hold at most this many bytes together: a grant chain uses each step once, as the base of the
# next, and a burst of a thousand grants left 55-62 MB of steps cached (measured).
_PASSING_CACHE_BYTES: Final = 32 * 1024 * 1024
_EPSILON_CACHE_SIZE: Final = 4096
# Points of a PMF read at once when looking for the epsilon of a delta (about 2 MB of temporaries).
_EPSILON_SCAN_CHUNK: Final = 1 << 16
# The tail mass a self-composition may move to infinity: dp-accounting's default for ``self_compose``.
_SELF_COMPOSE_TRUNCATION: Final = 1e-15
# The tail mass a composition of two PLDs may move to infinity: dp-accounting's default for ``compose``.
_COMPOSE_TRUNCATION: Final = 1e-15

# A multiset of mechanisms in canonical form: (mechanism, count > 0) sorted by sort_key.
Multiset = tuple[tuple[Mechanism, int], ...]


def multiset(mechanisms: Iterable[Mechanism] | Mapping[Mechanism, int]) -> Multiset:
    """The canonical multiset of ``mechanisms`` (an iterable, or counts per mechanism)."""
    counts = Counter(mechanisms) if not isinstance(mechanisms, Mapping) else Counter(dict(mechanisms))
    return tuple(sorted(((m, c) for m, c in counts.items() if c > 0), key=lambda item: sort_key(item[0])))


def merged(*parts: Multiset) -> Multiset:
    """The multiset union (counts added) of ``parts``."""
    total: Counter[Mechanism] = Counter()
    for part in parts:
        for mechanism, count in part:
            total[mechanism] += count
    return multiset(total)


class _NumpyFFT:
    """A scipy.fft backend (uarray protocol) that computes the transforms dp-accounting's convolutions use with
    ``numpy.fft``, which caches no plan; any other call is left to scipy's own backend."""

    __ua_domain__ = "numpy.scipy.fft"
    _ARGUMENTS = frozenset({"n", "s", "axis", "axes", "norm"})  # numpy's; scipy's others only tune speed

    @staticmethod
    def __ua_function__(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        transform = getattr(np.fft, method.__name__, None)
        if transform is None or len(args) > 4 or kwargs.get("plan") is not None:
            return NotImplemented
        return transform(*args, **{key: value for key, value in kwargs.items() if key in _NumpyFFT._ARGUMENTS})


def composed_epsilon(mechanisms: Multiset, delta: float, *, lasting: bool = False) -> float:
    """Epsilon of everything in ``mechanisms`` together at ``delta`` (``math.inf`` if no finite epsilon holds).

    See the module docstring for the guarantee. An empty multiset gives 0. ``lasting``: a multiset that is
    composed again and again as others come and go (a ledger's Committed claims), whose composition the
    cache keeps among the lasting ones; the others pass (:data:`_PASSING_CACHE_BYTES`). Only what is
    kept depends on it, never the figure's bound.
    """
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1); got {delta!r}")
    with scipy.fft.set_backend(_NumpyFFT):
        return _CACHE.epsilon(mechanisms, float(delta), lasting)


def standalone_epsilon(mechanism: Mechanism, delta: float) -> float:
    """Epsilon of ``mechanism`` alone at ``delta``, by the same composition (its cost on an empty budget)."""
    return composed_epsilon(((mechanism, 1),), delta)


def cached_pld_bytes() -> int:
    """Bytes of probabilities the cached compositions hold (at most ``_PLD_CACHE_BYTES``, or the newest alone)."""
    return _CACHE.pld_bytes


def cache_clear() -> None:
    """Forget every cached composition (for cold-start measurements)."""
    _CACHE.clear()


def _group_pld(mechanism: Mechanism, count: int) -> PLD:
    """The PLD of ``count`` runs of ``mechanism``, self-composed at once (not kept apart from the multisets it
    composes, which :class:`_Cache` bounds in bytes: a group of a thousand claims holds megabytes)."""
    if isinstance(mechanism, DpSgd):
        return _self_composed(_sgd_step_pld(mechanism.noise_multiplier, mechanism.sample_rate), mechanism.steps * count)
    parameters = pld_common.DifferentialPrivacyParameters(mechanism.epsilon, mechanism.delta)
    single = pld_module.from_privacy_parameters(parameters, value_discretization_interval=DISCRETIZATION)
    return single if count == 1 else single.self_compose(count)


@functools.lru_cache(maxsize=64)
def _sgd_step_pld(noise_multiplier: float, sample_rate: float) -> PLD:
    """The PLD of one step of Poisson-sampled DP-SGD, as ``PLDAccountant`` builds it."""
    return pld_module.from_gaussian_mechanism(
        standard_deviation=noise_multiplier, sampling_prob=sample_rate, value_discretization_interval=DISCRETIZATION
    )


def _self_composed(pld: PLD, times: int) -> PLD:
    """``pld.self_compose(times)``, each dense PMF's power computed with the real FFT (:func:`_dense_power`).

    The same PLD as dp-accounting's (a unit test compares the probabilities, the bounds and the infinity
    masses); a sparse PMF (a generic claim's) is left to dp-accounting.
    """
    pmfs = [
        _dense_power(pmf, times) if isinstance(pmf, pld_pmf.DensePLDPmf)
        else pmf.self_compose(times, _SELF_COMPOSE_TRUNCATION)
        for pmf in _pmfs(pld)
    ]  # fmt: skip
    return pld_module.PrivacyLossDistribution(*pmfs)


def _composed(pld: PLD, other: PLD) -> PLD:
    """``pld.compose(other)``, each pair of PMFs composed as dp-accounting's ``compose_pmfs`` composes it, dense
    ones by :func:`_dense_composed`."""
    pairs = [(pld._pmf_remove, other._pmf_remove)]
    if not (pld._symmetric and other._symmetric):
        pairs.append((pld._pmf_add, other._pmf_add))
    composed = [
        _dense_composed(first.to_dense_pmf(), second.to_dense_pmf())
        if isinstance(first, pld_pmf.DensePLDPmf) or isinstance(second, pld_pmf.DensePLDPmf)
        else pld_pmf.compose_pmfs(first, second, _COMPOSE_TRUNCATION)
        for first, second in pairs
    ]  # fmt: skip
    return pld_module.PrivacyLossDistribution(*composed)


def _dense_composed(first: pld_pmf.DensePLDPmf, second: pld_pmf.DensePLDPmf) -> pld_pmf.DensePLDPmf:
    """``first.compose(second)`` with dp-accounting's truncation of the tails, its convolution computed as
    ``scipy.signal.fftconvolve`` computes it (real FFTs of the length it picks, the product of the spectra, the
    inverse transform cut to the full convolution) under :class:`_NumpyFFT`, but with the product taken in place
    and each array dropped as soon as it is used (a unit test: the same PLD, under half the memory above it)."""
    first.validate_composable(second)
    size = first.size + second.size - 1
    length = scipy.fft.next_fast_len(size, True)
    spectrum = np.fft.rfft(first._probs, length)
    spectrum *= np.fft.rfft(second._probs, length)
    convolution = np.fft.irfft(spectrum, length)
    del spectrum
    offset, kept, right_tail = pld_pmf._truncate_tails(convolution[:size], _COMPOSE_TRUNCATION, first._pessimistic_estimate)
    infinity_mass = first._infinity_mass + second._infinity_mass - first._infinity_mass * second._infinity_mass
    return pld_pmf.DensePLDPmf(
        first._discretization,
        first._lower_loss + second._lower_loss + offset,
        kept.copy(),  # its own array: the whole convolution goes
        infinity_mass + right_tail,
        first._pessimistic_estimate,
    )


def _dense_power(pmf: pld_pmf.DensePLDPmf, times: int) -> pld_pmf.DensePLDPmf:
    """``pmf`` composed ``times`` times with itself, as ``DensePLDPmf.self_compose`` composes it.

    dp-accounting's rule, step by step: the support kept is the range outside which at most
    :data:`_SELF_COMPOSE_TRUNCATION` of the mass lies (its Chernoff bounds,
    ``compute_self_convolve_bounds``); the power is a circular convolution of the transform length dp-accounting
    picks, read from that range; the infinity mass is the truncated mass plus ``1 - (1 - m)^times`` of the
    PMF's own infinity mass ``m``. Only the transform differs: ``rfft``/``irfft`` (the spectrum of a real array,
    half of it), raised to the power in place. Reaches into the PMF's fields as :func:`pld_bytes` does.
    """
    probabilities = pmf._probs
    lower, upper = pld_common.compute_self_convolve_bounds(probabilities, times, _SELF_COMPOSE_TRUNCATION)
    length = upper - lower + 1
    size = scipy.fft.next_fast_len(max(length, probabilities.size))
    spectrum = np.fft.rfft(probabilities, size)
    np.power(spectrum, times, out=spectrum)
    circular = np.fft.irfft(spectrum, size)
    del spectrum
    start = lower % size
    end = start + length
    power = circular[start:end].copy() if end <= size else np.concatenate((circular[start:], circular[: end - size]))
    infinity_mass = _SELF_COMPOSE_TRUNCATION - math.expm1(times * math.log1p(-pmf._infinity_mass))
    return pld_pmf.DensePLDPmf(
        pmf._discretization, pmf._lower_loss * times + lower, power, infinity_mass, pmf._pessimistic_estimate
    )


def epsilon_for_delta(pld: PLD, delta: float) -> float:
    """``pld.get_epsilon_for_delta(delta)``: the smallest epsilon whose hockey-stick divergence is at most ``delta``.

    dp-accounting walks a dense PMF point by point in Python from its largest loss down to that epsilon: 0.1 to
    0.4 s for one figure of a ledger of a thousand claims (measured), holding the GIL, so the operator's event
    loop stalls meanwhile. :func:`_dense_epsilon` runs the same walk in numpy, chunk by chunk.
    """
    epsilons = [
        _dense_epsilon(pmf, delta) if isinstance(pmf, pld_pmf.DensePLDPmf) else pmf.get_epsilon_for_delta(delta)
        for pmf in _pmfs(pld)
    ]
    return float(max(epsilons))


def _dense_epsilon(pmf: pld_pmf.DensePLDPmf, delta: float) -> float:
    """``pmf.get_epsilon_for_delta(delta)`` by dp-accounting's own walk, vectorized.

    The walk (``pld_pmf._get_epsilon_for_delta``) goes from the largest loss down, adding each point's
    probability ``p`` to ``mass_upper`` (which starts at the infinity mass) and ``exp(-loss) * p`` to
    ``mass_lower``, and stops before the first point whose loss is at most ``log((mass_upper - delta) /
    mass_lower)``, which is then the epsilon. Here each chunk's running masses are cumulative sums that start
    from the masses the chunk found, and the losses are the same repeated subtractions of the interval
    (``itertools.count``), so every sum is the walk's own, in the walk's order; only numpy's ``exp`` and ``log``
    may differ from ``math``'s in the last bit. A unit test compares the two on many PLDs.
    """
    infinity_mass = pmf._infinity_mass
    if infinity_mass > delta:
        return math.inf
    interval = pmf._discretization
    reversed_probabilities = pmf._probs[::-1]
    loss = (pmf._lower_loss + pmf.size - 1) * interval  # the largest, as the walk's first
    upper, lower = float(infinity_mass), 0.0
    for start in range(0, pmf.size, _EPSILON_SCAN_CHUNK):
        probabilities = reversed_probabilities[start : start + _EPSILON_SCAN_CHUNK]
        count = probabilities.size
        losses = np.cumsum(np.concatenate(([loss], np.full(count, -interval))))  # [count] is the next chunk's first
        uppers = np.cumsum(np.concatenate(([upper], probabilities)))  # [i]: before point i is added
        lowers = np.cumsum(np.concatenate(([lower], np.exp(-losses[:count]) * probabilities)))
        before_upper, before_lower = uppers[:count], lowers[:count]
        with np.errstate(divide="ignore", invalid="ignore"):
            stops = (before_upper > delta) & (before_lower > 0) & (
                np.log((before_upper - delta) / before_lower) >= losses[:count]
            )
        # The walk returns max(0, loss) at once where a point leaves mass_upper >= delta with mass_lower still 0.
        zero_lower = (uppers[1:] >= delta) & (lowers[1:] == 0)
        stop = int(np.argmax(stops)) if stops.any() else count
        zero = int(np.argmax(zero_lower)) if zero_lower.any() else count
        if zero < stop:
            return max(0.0, float(losses[zero]))
        if stop < count:
            upper, lower = float(uppers[stop]), float(lowers[stop])
            break
        loss, upper, lower = float(losses[count]), float(uppers[count]), float(lowers[count])
    if upper <= lower + delta:
        return 0.0
    return math.log((upper - delta) / lower)


def _owning(pld: PLD) -> PLD:
    """``pld`` with each probability array its own, not a view of a larger one; the same figures.

    dp-accounting truncates a composition's tails by slicing the convolution (``_truncate_tails``) and a
    self-composition's by slicing an FFT-sized array: the slice keeps the whole array alive, up to twice the
    support :func:`pld_bytes` counts, so a cached PLD would hold more than :data:`_PLD_CACHE_BYTES` allows
    (94 MiB of them at the peak of a 300-model burst, measured). Reaches into the PMFs as :func:`_pmfs`
    does; a unit test fails if that changes.
    """
    for pmf in _pmfs(pld):
        probabilities = getattr(pmf, "_probs", None)  # dense PMFs; sparse ones keep a dict
        if isinstance(probabilities, np.ndarray) and probabilities.base is not None:
            pmf._probs = probabilities.copy()
    return pld


def pld_bytes(pld: PLD) -> int:
    """Bytes of the probabilities ``pld`` holds (8 per point of the support, per direction)."""
    return sum(8 * pmf.size for pmf in _pmfs(pld))


def _pmfs(pld: PLD) -> tuple[pld_pmf.PLDPmf, ...]:
    """The PMFs of ``pld``: the remove direction's, then the add direction's unless it is the same one (a
    symmetric PLD). dp-accounting keeps them private (``_pmf_remove``, ``_pmf_add``); a unit test fails if that
    changes."""
    return tuple({id(pmf): pmf for pmf in (pld._pmf_remove, pld._pmf_add)}.values())


def _releases_nothing(mechanism: Mechanism) -> bool:
    if isinstance(mechanism, DpSgd):
        return mechanism.steps == 0
    return mechanism.epsilon == 0 and mechanism.delta == 0


class _Cache:
    """Composed PLDs of recent multisets and epsilons of recent (multiset, delta) pairs, LRU.

    The PLDs are bounded in number and in bytes (:data:`_PLD_CACHE_SIZE`, :data:`_PLD_CACHE_BYTES`), the
    passing ones (not lasting) in bytes too (:data:`_PASSING_CACHE_BYTES`).
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._plds: OrderedDict[Multiset, PLD] = OrderedDict()
        self._pld_sizes: dict[Multiset, int] = {}
        self._lasting: set[Multiset] = set()
        self._epsilons: OrderedDict[tuple[Multiset, float], float] = OrderedDict()

    @property
    def pld_bytes(self) -> int:
        """Bytes of probabilities the cached PLDs hold together."""
        with self._lock:
            return sum(self._pld_sizes.values())

    def clear(self) -> None:
        with self._lock:
            self._plds.clear()
            self._pld_sizes.clear()
            self._lasting.clear()
            self._epsilons.clear()
            _sgd_step_pld.cache_clear()

    def epsilon(self, mechanisms: Multiset, delta: float, lasting: bool = False) -> float:
        with self._lock:
            key = (mechanisms, delta)
            if key in self._epsilons:
                self._epsilons.move_to_end(key)
                return self._epsilons[key]
            value = min(self._pld_epsilon(mechanisms, delta, lasting), self._basic_epsilon(mechanisms, delta))
            self._epsilons[key] = value
            if len(self._epsilons) > _EPSILON_CACHE_SIZE:
                self._epsilons.popitem(last=False)
            return value

    def _pld_epsilon(self, mechanisms: Multiset, delta: float, lasting: bool) -> float:
        active = tuple((m, c) for m, c in mechanisms if not _releases_nothing(m))
        if not active:
            return 0.0
        return epsilon_for_delta(self._pld(active, lasting), delta)

    def _basic_epsilon(self, mechanisms: Multiset, delta: float) -> float:
        """The DP-SGD part by PLD at what the generic entries leave of delta, plus their epsilons (exact sums)."""
        generic = [(m, c) for m, c in mechanisms if isinstance(m, EpsilonDelta)]
        if not generic:
            return math.inf
        spent_delta = sum((Fraction(repr(m.delta)) * c for m, c in generic), Fraction(0))
        spent_epsilon = sum((Fraction(repr(m.epsilon)) * c for m, c in generic), Fraction(0))
        left = Fraction(repr(delta)) - spent_delta
        rest = tuple((m, c) for m, c in mechanisms if isinstance(m, DpSgd) and m.steps > 0)
        if left < 0 or (left == 0 and rest):
            return math.inf
        if not rest:
            return float(spent_epsilon)
        return self.epsilon(rest, float(left)) + float(spent_epsilon)

    def _pld(self, mechanisms: Multiset, lasting: bool = False) -> PLD:
        if mechanisms in self._plds:
            self._plds.move_to_end(mechanisms)
            if lasting:
                self._lasting.add(mechanisms)
            return self._plds[mechanisms]
        base_key: Multiset = ()
        if len(mechanisms) > 1:  # one mechanism: from scratch (module docstring, Cost)
            for cached in self._plds:
                if sum(c for _, c in cached) > sum(c for _, c in base_key) and _contains(mechanisms, cached):
                    base_key = cached
        pld = self._plds[base_key] if base_key else None
        have = dict(base_key)
        for mechanism, count in mechanisms:
            missing = count - have.get(mechanism, 0)
            if missing:
                group = _group_pld(mechanism, missing)
                pld = group if pld is None else _composed(pld, group)
        assert pld is not None, "a non-empty multiset composes to a PLD"
        if len(mechanisms) == 1 and not lasting:
            return pld  # one mechanism, passing: not kept (module docstring, Cost)
        self._plds[mechanisms] = pld = _owning(pld)
        self._pld_sizes[mechanisms] = pld_bytes(pld)
        if lasting:
            self._lasting.add(mechanisms)
        self._evict(mechanisms, base_key)
        return pld

    def _evict(self, newest: Multiset, base: Multiset) -> None:
        """Drop the least recently used PLDs but ``newest`` until the cache is within its bounds; for the passing
        ones' bound, only those a more recently used one contains (a grant chain's earlier steps: a later one
        serves every multiset they would) and never the ``base`` that ``newest`` grew from (the next probe of
        the same grant may start from it)."""
        held = sum(self._pld_sizes.values())
        passing = sum(size for key, size in self._pld_sizes.items() if key not in self._lasting)
        order = list(self._plds)  # least recently used first
        for index, key in enumerate(order):
            if key == newest:
                continue
            over = len(self._plds) > _PLD_CACHE_SIZE or held > _PLD_CACHE_BYTES
            passed = (key != base and key not in self._lasting and passing > _PASSING_CACHE_BYTES
                      and any(_contains(later, key) for later in order[index + 1 :] if later in self._plds))
            if not (over or passed):
                continue
            size = self._pld_sizes.pop(key)
            del self._plds[key]
            held -= size
            if key in self._lasting:
                self._lasting.discard(key)
            else:
                passing -= size


def _contains(larger: Multiset, smaller: Multiset) -> bool:
    """Whether ``larger`` holds every mechanism of ``smaller`` at least as many times."""
    counts = dict(larger)
    return all(counts.get(mechanism, 0) >= count for mechanism, count in smaller)


_CACHE = _Cache()
