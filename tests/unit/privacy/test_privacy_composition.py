"""The composed epsilon of ledger mechanisms: against prv-accountant and dp-accounting, the example's
figures, the generic (epsilon, delta) bound, and the grants it gives on an epsilon = 10 budget."""

from __future__ import annotations

import inspect
import math
import tracemalloc
from typing import Any

import numpy as np
import pytest
import scipy.fft
from dp_accounting import dp_event
from dp_accounting.pld import common as pld_common
from dp_accounting.pld import pld_pmf, pld_privacy_accountant
from dp_accounting.pld import privacy_loss_distribution as pld_module
from prv_accountant import PoissonSubsampledGaussianMechanism, PRVAccountant

from securemodel.privacy.claims import BudgetSpec, ClaimState, Consumer, Ledger, totals
from securemodel.privacy import composition
from securemodel.privacy.composition import (
    DISCRETIZATION,
    cache_clear,
    cached_pld_bytes,
    composed_epsilon,
    merged,
    multiset,
    pld_bytes,
    standalone_epsilon,
)
from securemodel.privacy.ledger import LedgerError, commit, submit
from securemodel.privacy.mechanisms import DpSgd, EpsilonDelta

# The breast_cancer example's training: sigma for epsilon 2 at delta 1e-5, batch 64 of 456, 20 epochs.
EXAMPLE = DpSgd(3.5304316605045396, 64 / 456, 143)
DELTA = 1e-5
NOW = "2026-11-21T10:00:00Z"


def prv(mechanisms: list[tuple[DpSgd, int]], delta: float) -> tuple[float, float, float]:
    """Microsoft's prv-accountant (shares no code with dp-accounting): lower, estimate, upper."""
    accountant = PRVAccountant(
        prvs=[PoissonSubsampledGaussianMechanism(m.sample_rate, m.noise_multiplier) for m, _ in mechanisms],
        max_self_compositions=[m.steps * count for m, count in mechanisms],
        eps_error=0.01,
        delta_error=delta / 1000,
    )
    return accountant.compute_epsilon(delta=delta, num_self_compositions=[m.steps * c for m, c in mechanisms])


class TestAgainstPrvAccountant:
    @pytest.mark.parametrize(("count", "expected"), [(1, 2.0), (5, 4.88), (15, 9.32)])
    def test_the_examples_claims_compose_within_one_percent(self, count: int, expected: float) -> None:
        ours = composed_epsilon(multiset([EXAMPLE] * count), DELTA)
        lower, estimate, _ = prv([(EXAMPLE, count)], DELTA)
        assert ours == pytest.approx(estimate, rel=0.01)
        assert ours >= lower  # an upper bound never lies below the true value's lower bound
        assert ours == pytest.approx(expected, abs=0.01)

    def test_different_mechanisms_compose_within_one_percent(self) -> None:
        other = DpSgd(1.1, 0.004, 2500)
        ours = composed_epsilon(multiset([EXAMPLE, EXAMPLE, other, other, other]), DELTA)
        _, estimate, _ = prv([(EXAMPLE, 2), (other, 3)], DELTA)
        assert ours == pytest.approx(estimate, rel=0.01)


def test_dp_sgd_composition_equals_dp_accountings_pld_accountant() -> None:
    """We compose PLD objects ourselves (to cache them); the accountant composes the same events."""
    other = DpSgd(2.0, 0.02, 500)
    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=DISCRETIZATION)
    for mechanism, count in ((EXAMPLE, 3), (other, 2)):
        step = dp_event.PoissonSampledDpEvent(
            mechanism.sample_rate, dp_event.GaussianDpEvent(mechanism.noise_multiplier)
        )
        accountant.compose(dp_event.SelfComposedDpEvent(step, mechanism.steps), count)
    cache_clear()
    assert composed_epsilon(multiset({EXAMPLE: 3, other: 2}), DELTA) == pytest.approx(
        accountant.get_epsilon(DELTA), rel=1e-6
    )


def _memory_above_result(compose: Any) -> int:
    """Bytes ``compose()`` held at its peak beyond the PLD it returns (numpy reports its arrays to tracemalloc)."""
    with scipy.fft.set_backend(composition._NumpyFFT):
        tracemalloc.start()
        try:
            result = compose()
            held, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert held >= pld_bytes(result)
    return peak - held


class TestSelfComposition:
    """A group of identical runs is composed as dp-accounting's ``self_compose`` composes it, with the real FFT."""

    @pytest.mark.parametrize(
        ("sigma", "sample_rate", "steps"),
        [(3.733109028658119, 0.4507042253521127, 2997), (1.1, 0.01, 1000), (0.8, 0.3, 7), (2.0, 1.0, 50)],
    )
    def test_it_is_dp_accountings_self_composition(self, sigma: float, sample_rate: float, steps: int) -> None:
        step = composition._sgd_step_pld(sigma, sample_rate)
        with scipy.fft.set_backend(composition._NumpyFFT):
            ours = composition._self_composed(step, steps)
            theirs = step.self_compose(steps)
        for mine, reference in ((ours._pmf_remove, theirs._pmf_remove), (ours._pmf_add, theirs._pmf_add)):
            assert (mine._lower_loss, mine.size) == (reference._lower_loss, reference.size)  # the same support
            assert mine._infinity_mass == reference._infinity_mass
            # Each point within FFT round-off: both transforms leave noise of about 1e-18 on every point.
            np.testing.assert_allclose(mine._probs, reference._probs, rtol=0, atol=1e-16)
        # Together the round-off is about 1e-13 of mass, either sign: nothing at a budget's delta.
        for delta in (1e-5, 1e-7):
            epsilon = theirs.get_epsilon_for_delta(delta)
            assert ours.get_epsilon_for_delta(delta) == pytest.approx(epsilon, rel=1e-7)
            assert ours.get_delta_for_epsilon(epsilon) == pytest.approx(delta, abs=1e-12)

    def test_it_truncates_as_much_tail_mass_as_dp_accounting(self) -> None:
        signature = inspect.signature(pld_module.PrivacyLossDistribution.self_compose)
        assert composition._SELF_COMPOSE_TRUNCATION == signature.parameters["tail_mass_truncation"].default

    def test_it_needs_a_third_of_the_memory_above_its_result(self) -> None:
        """A thousand claims of three steps, as a shrunk ledger composes them from scratch."""
        step = composition._sgd_step_pld(3.733109028658119, 0.4507042253521127)
        ours = _memory_above_result(lambda: composition._self_composed(step, 3000))
        assert ours < _memory_above_result(lambda: step.self_compose(3000)) / 2.5


def _generic(epsilon: float, delta: float) -> pld_module.PrivacyLossDistribution:
    parameters = pld_common.DifferentialPrivacyParameters(epsilon, delta)
    return pld_module.from_privacy_parameters(parameters, value_discretization_interval=DISCRETIZATION)


def _runs(sigma: float, sample_rate: float, steps: int) -> pld_module.PrivacyLossDistribution:
    return composition._self_composed(composition._sgd_step_pld(sigma, sample_rate), steps)


BENCH_STEP = (3.733109028658119, 0.4507042253521127)  # the control-plane benchmark's claims: 3 steps each


class TestComposition:
    """Two PLDs are composed as dp-accounting composes them (scipy's fftconvolve, its truncation), in less memory."""

    PAIRS = {
        "a ledger and a batch": lambda: (_runs(*BENCH_STEP, 3000), _runs(*BENCH_STEP, 300)),
        "two shapes": lambda: (_runs(*BENCH_STEP, 30), _runs(1.1, 0.004, 5000)),
        "DP-SGD and a generic claim": lambda: (_runs(*BENCH_STEP, 30), _generic(0.5, 1e-7)),
        "two generic claims (sparse)": lambda: (_generic(0.5, 1e-7), _generic(0.5, 1e-7).self_compose(3)),
        "symmetric": lambda: (
            pld_module.from_gaussian_mechanism(2.0, value_discretization_interval=DISCRETIZATION),
            pld_module.from_gaussian_mechanism(1.0, value_discretization_interval=DISCRETIZATION),
        ),
    }

    @pytest.mark.parametrize("pair", PAIRS.values(), ids=PAIRS.keys())
    def test_it_is_dp_accountings_composition_bit_for_bit(self, pair: Any) -> None:
        first, second = pair()
        with scipy.fft.set_backend(composition._NumpyFFT):
            ours, theirs = composition._composed(first, second), first.compose(second)
        assert ours._symmetric == theirs._symmetric
        for mine, reference in ((ours._pmf_remove, theirs._pmf_remove), (ours._pmf_add, theirs._pmf_add)):
            assert type(mine) is type(reference)
            assert mine._infinity_mass == reference._infinity_mass
            if isinstance(reference, pld_pmf.DensePLDPmf):
                assert mine._lower_loss == reference._lower_loss
                assert np.array_equal(mine._probs, reference._probs)
                assert mine._probs.base is None  # its own array, not a view of the whole convolution
            else:
                assert mine._loss_probs == reference._loss_probs
        assert composition.epsilon_for_delta(ours, DELTA) == theirs.get_epsilon_for_delta(DELTA)

    def test_it_needs_less_than_half_the_memory_above_its_result(self) -> None:
        first, second = self.PAIRS["a ledger and a batch"]()
        ours = _memory_above_result(lambda: composition._composed(first, second))
        assert ours < _memory_above_result(lambda: first.compose(second)) / 2


def _ledger_pld(mechanisms: list[Any]) -> pld_module.PrivacyLossDistribution:
    with scipy.fft.set_backend(composition._NumpyFFT):
        return composition._CACHE._pld(multiset(mechanisms))


class TestEpsilonForDelta:
    """The epsilon of a composed PLD is dp-accounting's walk over its points, vectorized: the same figure."""

    LEDGERS = [
        [DpSgd(3.733109028658119, 0.4507042253521127, 3)] * 1000,  # the control-plane benchmark's thousand claims
        [EXAMPLE] * 5,
        [DpSgd(1.1, 0.004, 2500)] * 2 + [EXAMPLE],
        [DpSgd(0.5, 1.0, 1)],  # no sampling: a symmetric PLD
        [EXAMPLE, EpsilonDelta(0.5, 1e-7)],
        [EpsilonDelta(1.0, 1e-6)] * 3,  # sparse PMFs, left to dp-accounting
    ]

    @pytest.mark.parametrize("ledger", LEDGERS)
    @pytest.mark.parametrize("delta", [0.5, 1e-3, 1e-5, 1e-7, 1e-9, 1e-12])
    def test_it_is_dp_accountings_epsilon(self, ledger: list[Any], delta: float) -> None:
        pld = _ledger_pld(ledger)
        assert composition.epsilon_for_delta(pld, delta) == pytest.approx(pld.get_epsilon_for_delta(delta), rel=1e-12)

    @pytest.mark.parametrize("delta", [1e-3, 1e-5, 1e-9])
    def test_the_walk_carries_its_masses_across_chunks(self, delta: float, monkeypatch: pytest.MonkeyPatch) -> None:
        pld = _ledger_pld([EXAMPLE] * 5)
        whole = composition.epsilon_for_delta(pld, delta)
        monkeypatch.setattr(composition, "_EPSILON_SCAN_CHUNK", 7)  # thousands of chunks, the stop inside one
        assert composition.epsilon_for_delta(pld, delta) == whole == pytest.approx(pld.get_epsilon_for_delta(delta))

    def test_losses_too_large_for_exp_give_the_loss_itself(self) -> None:
        """Where exp(-loss) is 0 the walk's lower mass stays 0: it returns the loss that reached delta."""
        pmf = pld_pmf.DensePLDPmf(1.0, 800, np.array([0.5, 0.2, 0.3]), 0.0, True)
        pld = pld_module.PrivacyLossDistribution(pmf)
        for delta in (0.25, 0.4, 0.6):
            assert composition.epsilon_for_delta(pld, delta) == pld.get_epsilon_for_delta(delta)
        assert composition.epsilon_for_delta(pld, 0.25) == 802.0

    def test_an_infinity_mass_above_delta_has_no_epsilon(self) -> None:
        pmf = pld_pmf.DensePLDPmf(0.1, -3, np.array([0.5, 0.2, 0.29]), 0.01, True)
        assert composition.epsilon_for_delta(pld_module.PrivacyLossDistribution(pmf), 1e-3) == math.inf


class TestGeneric:
    def test_one_generic_claim_costs_its_own_epsilon_at_its_own_delta(self) -> None:
        assert standalone_epsilon(EpsilonDelta(3.0, DELTA), DELTA) == 3.0

    def test_generic_claims_never_cost_more_than_their_sum(self) -> None:
        for epsilon, count in ((0.1, 10), (0.7, 3), (2.0, 5)):
            composed = composed_epsilon(multiset([EpsilonDelta(epsilon, 1e-7)] * count), DELTA)
            assert composed <= epsilon * count + 1e-12

    def test_many_small_generic_claims_cost_less_than_their_sum(self) -> None:
        assert composed_epsilon(multiset([EpsilonDelta(0.1, 0.0)] * 100), DELTA) < 0.75 * 10

    def test_their_deltas_eat_the_budgets_lifetime_delta(self) -> None:
        assert composed_epsilon(multiset([EpsilonDelta(2.0, DELTA)] * 2), DELTA) == math.inf
        assert math.isfinite(composed_epsilon(multiset([EpsilonDelta(2.0, DELTA / 2)] * 2), DELTA))

    def test_generic_and_dp_sgd_compose_together(self) -> None:
        alone = composed_epsilon(multiset([EXAMPLE] * 2), DELTA)
        both = composed_epsilon(multiset([EXAMPLE, EXAMPLE, EpsilonDelta(0.5, 1e-7)]), DELTA)
        assert alone < both < alone + 0.5 + 1e-9  # basic composition bounds it from above


class TestCache:
    def test_the_figure_does_not_depend_on_the_order_the_cache_saw_the_multisets_in(self) -> None:
        other = DpSgd(2.0, 0.02, 500)
        cache_clear()
        cold = composed_epsilon(multiset([EXAMPLE] * 4 + [other] * 3), DELTA)
        cache_clear()
        for count in range(1, 5):  # grown one claim at a time, as grants do
            composed_epsilon(multiset([EXAMPLE] * count), DELTA)
        warm = composed_epsilon(multiset([EXAMPLE] * 4 + [other] * 3), DELTA)
        assert warm == pytest.approx(cold, rel=1e-5)

    def test_a_pld_counts_eight_bytes_per_point_of_each_direction(self) -> None:
        symmetric = pld_module.from_laplace_mechanism(1.0, value_discretization_interval=DISCRETIZATION)
        subsampled = pld_module.from_gaussian_mechanism(2.0, sampling_prob=0.1,
                                                        value_discretization_interval=DISCRETIZATION)  # fmt: skip
        # A symmetric PLD holds one PMF; Poisson subsampling makes the two directions differ.
        assert pld_bytes(subsampled) > pld_bytes(symmetric) > 0
        assert pld_bytes(subsampled.compose(subsampled)) > pld_bytes(subsampled)

    def test_the_cached_compositions_stay_within_their_bytes_and_give_the_same_figures(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        grown = [multiset([EXAMPLE] * count + [DpSgd(2.0, 0.02, 500)]) for count in range(1, 7)]
        cache_clear()
        cold = []
        for held in grown:  # each from scratch
            cold.append(composed_epsilon(held, DELTA))
            cache_clear()
        cache_clear()
        composed_epsilon(grown[1], DELTA)
        limit = 2 * cached_pld_bytes()  # room for about two compositions of the first few claims
        monkeypatch.setattr(composition, "_PLD_CACHE_BYTES", limit)
        cache_clear()
        warm = []
        for held in grown:  # one claim more each time, as grants do
            warm.append(composed_epsilon(held, DELTA))
            assert 0 < cached_pld_bytes() <= limit  # a composition's support grows like sqrt(claims): each fits
        assert warm == pytest.approx(cold, rel=1e-5)

    def test_identical_claims_are_composed_from_scratch_and_kept_only_if_lasting(self) -> None:
        """A multiset of one mechanism is one self-composition whatever the cache holds: each step of a grant
        chain of identical claims gives exactly its cold figure, and no step is kept beside the next (at a
        thousand claims, 17 MB each), unless composed ``lasting`` (a ledger's Committed claims)."""
        grown = [multiset([EXAMPLE] * count) for count in range(1, 7)]
        cold = []
        for held in grown:
            cache_clear()
            cold.append(composed_epsilon(held, DELTA))
        cache_clear()
        composed_epsilon(grown[1], DELTA, lasting=True)
        warm = [composed_epsilon(held, DELTA) for held in grown]
        assert warm == cold
        assert list(composition._CACHE._plds) == [grown[1]]

    def test_a_grant_chain_passes_and_the_committed_composition_lasts(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A burst of grants composes ever larger multisets, each once as the base of the next: only the newest
        passing compositions stay (within their bytes), while the Committed claims' composition, composed
        ``lasting``, stays too; the figures are those composed from scratch."""
        committed = multiset([DpSgd(2.0, 0.02, 500)] * 2)
        chain = [merged(committed, multiset([EXAMPLE] * count)) for count in range(1, 7)]
        cold = []
        for held in chain:
            cache_clear()
            cold.append(composed_epsilon(held, DELTA))
        cache_clear()
        composed_epsilon(chain[0], DELTA)
        monkeypatch.setattr(composition, "_PASSING_CACHE_BYTES", cached_pld_bytes())  # about one step's
        cache_clear()
        composed_epsilon(committed, DELTA, lasting=True)
        warm = [composed_epsilon(held, DELTA) for held in chain]
        cached = composition._CACHE._plds
        assert committed in cached and chain[-1] in cached
        assert not any(held in cached for held in chain[:-2])  # the steps a grant grew from have passed
        assert warm == pytest.approx(cold, rel=1e-5)

    def test_a_passing_composition_stays_while_nothing_newer_contains_it_and_while_it_is_the_newest_base(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """What keeps a grant's own compositions warm: a newer composition that does not contain the ledger's
        (another shape's claim alone) does not push it out, and a grant's probes (the ledger with 4, then 1 more
        claims) start from it, so it stays while it is the base of the newest."""
        held = multiset([EXAMPLE] * 3 + [DpSgd(2.0, 0.02, 500)])
        other = DpSgd(1.1, 0.004, 2500)
        monkeypatch.setattr(composition, "_PASSING_CACHE_BYTES", 1)
        cache_clear()
        composed_epsilon(held, DELTA)
        standalone_epsilon(other, DELTA)
        assert held in composition._CACHE._plds
        composed_epsilon(merged(held, ((other, 4),)), DELTA)
        assert held in composition._CACHE._plds
        composed_epsilon(merged(held, ((other, 1),)), DELTA)
        cached = composition._CACHE._plds
        assert merged(held, ((other, 1),)) in cached and held in cached  # the newest and the base it grew from

    def test_a_cached_composition_holds_only_the_points_it_counts(self) -> None:
        """dp-accounting leaves a composition's support as a slice of the whole convolution; the cache keeps its
        own copy, so the bytes it counts, and bounds, are the bytes it holds."""
        cache_clear()
        for count in (1, 2, 5):
            composed_epsilon(multiset([EXAMPLE] * count + [DpSgd(2.0, 0.02, 500)]), DELTA)
        plds = list(composition._CACHE._plds.values())
        held = [pmf._probs for pld in plds for pmf in {id(p): p for p in (pld._pmf_remove, pld._pmf_add)}.values()]
        assert len(plds) == 3 and held
        assert all(probabilities.base is None for probabilities in held)
        assert cached_pld_bytes() == sum(probabilities.nbytes for probabilities in held)

    def test_composition_is_monotone(self) -> None:
        previous = 0.0
        held = multiset([])
        for mechanism in [EXAMPLE, DpSgd(2.0, 0.02, 500), EpsilonDelta(0.3, 1e-7), EXAMPLE]:
            held = merged(held, ((mechanism, 1),))
            current = composed_epsilon(held, DELTA)
            assert current > previous
            previous = current

    def test_zero_steps_release_nothing(self) -> None:
        assert composed_epsilon(multiset([DpSgd(1.0, 0.1, 0)]), DELTA) == 0.0
        assert composed_epsilon((), DELTA) == 0.0


def example_ledger(claims: int, epsilon: float = 10.0, policy: str = "fcfs") -> Ledger:
    spec = BudgetSpec(epsilon, DELTA, policy)  # type: ignore[arg-type]
    ledger = Ledger()
    for index in range(claims):
        consumer = Consumer("SecureModel", "clinic-a", f"m{index}", f"uid-{index}")
        ledger = submit(ledger, spec, consumer, 2.0, DELTA, NOW, mechanism=EXAMPLE).ledger
    return ledger


class TestTheExampleOnABudgetOfTen:
    """Issue 9: with the example's training shape, fifteen claims of epsilon 2 compose to about 9.3 at
    delta 1e-5, where summing stops at five claims."""

    def test_sixteen_of_twenty_claims_are_granted_where_summing_grants_five(self) -> None:
        ledger = example_ledger(20)
        granted = [c for c in ledger.claims if c.state is ClaimState.RESERVED]
        assert len(granted) == 16  # 15 compose to 9.32, 16 to 9.69, 17 would be 10.06
        sums = totals(ledger, BudgetSpec(10.0, DELTA))
        assert sums.reserved == pytest.approx(9.69, abs=0.01)
        assert sums.summed_epsilon == 32.0 and sums.summed_delta == pytest.approx(16 * DELTA)
        assert 0 < sums.available < 0.4

    def test_five_claims_compose_to_about_4_88(self) -> None:
        spec = BudgetSpec(10.0, DELTA)
        ledger = example_ledger(5)
        for index in range(5):
            ledger = commit(ledger, spec, f"uid-{index}", NOW).ledger
        sums = totals(ledger, spec)
        assert sums.committed == pytest.approx(4.88, abs=0.01)
        assert sums.reserved == 0.0 and sums.summed_epsilon == 10.0

    def test_a_dp_sgd_commit_of_fewer_steps_gives_back_the_rest(self) -> None:
        spec = BudgetSpec(10.0, DELTA)
        ledger = example_ledger(17)  # the seventeenth waits
        half = DpSgd(EXAMPLE.noise_multiplier, EXAMPLE.sample_rate, 70)
        outcome = commit(ledger, spec, "uid-0", NOW, 1.3, mechanism=half)
        assert [d.kind.value for d in outcome.decisions] == ["Committed", "Granted"]
        assert outcome.ledger.claims[0].mechanism == half

    def test_a_commit_cannot_record_more_than_was_reserved(self) -> None:
        spec = BudgetSpec(10.0, DELTA)
        ledger = example_ledger(1)
        with pytest.raises(LedgerError, match="releases more"):
            commit(ledger, spec, "uid-0", NOW, mechanism=DpSgd(EXAMPLE.noise_multiplier, EXAMPLE.sample_rate, 144))
        with pytest.raises(LedgerError, match="releases more"):
            commit(ledger, spec, "uid-0", NOW, mechanism=DpSgd(3.0, EXAMPLE.sample_rate, 100))

    def test_a_dp_sgd_commit_without_its_mechanism_keeps_the_whole_charge(self) -> None:
        spec = BudgetSpec(10.0, DELTA)
        ledger = commit(example_ledger(1), spec, "uid-0", NOW, 1.0).ledger
        assert ledger.claims[0].mechanism == EXAMPLE and ledger.claims[0].epsilon == 1.0

    def test_a_claim_that_alone_exceeds_the_budget_is_rejected(self) -> None:
        ledger = example_ledger(1, epsilon=1.9)
        claim = ledger.claims[0]
        assert claim.state is ClaimState.REJECTED and claim.reason is not None
