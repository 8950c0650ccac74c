"""Local-DP frequency oracles: parameters, reports, unbiasedness, variance, privacy, events."""

from __future__ import annotations

import math

import pytest
import torch
from dp_accounting import dp_event
from dp_accounting.pld.pld_privacy_accountant import PLDAccountant
from dp_accounting.privacy_accountant import NeighboringRelation

from veil.errors import ConfigError
from veil.privacy import ldp
from veil.privacy.ldp import (
    choose_oracle,
    collect_support,
    count_variance,
    direct_encoding,
    estimate_counts,
    make_oracle,
    optimized_unary_encoding,
    oracle_dp_event,
    perturb,
    support_counts,
    symmetric_unary_encoding,
)
from veil.randomness import noise_generator

pytestmark = pytest.mark.filterwarnings("ignore::veil.randomness.InsecureNoiseWarning")

ORACLE_NAMES = ("grr", "sue", "oue")


def _generator(stream: int = 0) -> torch.Generator:
    return noise_generator(seed_for_testing=20170816, stream=stream)


def _replace_one_epsilon(event: dp_event.DpEvent) -> float:
    accountant = PLDAccountant(NeighboringRelation.REPLACE_ONE)
    accountant.compose(event)
    return accountant.get_epsilon(0.0)


def test_known_answer_parameters():
    # k = 4, e^ε = 3: GRR p = 3/6, q = 1/6; OUE q = 1/4; SUE p = √3 / (√3 + 1).
    eps = math.log(3)
    grr, sue, oue = (make_oracle(n, 4, eps) for n in ORACLE_NAMES)
    assert (grr.p, grr.q) == pytest.approx((0.5, 1 / 6))
    assert (oue.p, oue.q) == pytest.approx((0.5, 0.25))
    assert (sue.p, sue.q) == pytest.approx(
        (math.sqrt(3) / (math.sqrt(3) + 1), 1 / (math.sqrt(3) + 1))
    )
    assert grr == direct_encoding(4, eps) and sue == symmetric_unary_encoding(4, eps)
    assert oue == optimized_unary_encoding(4, eps)
    assert not grr.unary and sue.unary and oue.unary


@pytest.mark.parametrize("epsilon", [0.3, 1.0, 2.5])
def test_each_report_has_likelihood_ratio_e_to_the_epsilon(epsilon):
    grr, sue, oue = (make_oracle(n, 10, epsilon) for n in ORACLE_NAMES)
    assert grr.p / grr.q == pytest.approx(math.exp(epsilon))
    # Unary: the worst output flips the two bits where neighbouring inputs differ.
    for unary in (sue, oue):
        ratio = unary.p * (1 - unary.q) / (unary.q * (1 - unary.p))
        assert ratio == pytest.approx(math.exp(epsilon))


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 2.0])
def test_var_star_matches_wang_et_al_closed_forms(epsilon):
    n, k, e = 1000, 50, math.exp(epsilon)
    closed_forms = {
        "grr": n * (e + k - 2) / (e - 1) ** 2,
        "sue": n * math.sqrt(e) / (math.sqrt(e) - 1) ** 2,
        "oue": n * 4 * e / (e - 1) ** 2,
    }
    for name, expected in closed_forms.items():
        assert count_variance(make_oracle(name, k, epsilon), n) == pytest.approx(expected)


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 2.0, 3.0])
def test_auto_choice_flips_at_three_e_to_the_epsilon_plus_two(epsilon):
    threshold = 3 * math.exp(epsilon) + 2
    below, above = math.ceil(threshold) - 1, math.floor(threshold) + 1
    assert choose_oracle(below, epsilon) == "grr" and choose_oracle(above, epsilon) == "oue"
    assert make_oracle("auto", below, epsilon).name == "grr"
    assert make_oracle("auto", above, epsilon).name == "oue"


def test_grr_reports_are_items_and_the_empirical_ratio_is_e_to_the_epsilon():
    k, epsilon, n = 5, 1.0, 200_000
    oracle = direct_encoding(k, epsilon)
    reports, _ = perturb(oracle, torch.zeros(n, dtype=torch.int64), _generator())
    assert reports.dtype == torch.int64 and reports.shape == (n,)
    assert reports.min() >= 0 and reports.max() < k
    shares = torch.bincount(reports, minlength=k).double() / n
    assert shares[0].item() == pytest.approx(oracle.p, rel=0.01)
    # The other items are equally likely, each with probability q.
    torch.testing.assert_close(
        shares[1:], torch.full((k - 1,), oracle.q).double(), rtol=0.03, atol=0
    )
    # P[report = 0 | item 0] / P[report = 0 | item 1]:
    other, _ = perturb(oracle, torch.ones(n, dtype=torch.int64), _generator(1))
    ratio = shares[0].item() / (other == 0).double().mean().item()
    assert ratio == pytest.approx(math.exp(epsilon), rel=0.05)


@pytest.mark.parametrize("name", ["sue", "oue"])
def test_unary_reports_are_bit_vectors_with_the_right_number_of_ones(name):
    k, n = 20, 50_000
    oracle = make_oracle(name, k, 1.5)
    items = torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(0))
    bits, _ = perturb(oracle, items, _generator())
    assert bits.dtype == torch.bool and bits.shape == (n, k)
    expected_ones = oracle.p + (k - 1) * oracle.q
    assert bits.sum(dim=1).double().mean().item() == pytest.approx(expected_ones, rel=0.01)
    held = bits[torch.arange(n), items]
    assert held.double().mean().item() == pytest.approx(oracle.p, rel=0.02)
    not_held = (bits.sum() - held.sum()).item() / (n * (k - 1))
    assert not_held == pytest.approx(oracle.q, rel=0.02)


def _repeated_estimates(oracle, items: torch.Tensor, runs: int) -> torch.Tensor:
    """``[runs, k]`` count estimates, each from a fresh randomization of the same users."""
    n, k = items.numel(), oracle.num_categories
    reports, _ = perturb(oracle, items.repeat(runs), _generator(2))
    if oracle.unary:
        support = reports.view(runs, n, k).sum(dim=1)
    else:
        run = torch.arange(runs).repeat_interleave(n)
        support = torch.bincount(run * k + reports, minlength=runs * k).view(runs, k)
    return torch.stack([estimate_counts(oracle, s, n) for s in support])


@pytest.mark.parametrize("name", ORACLE_NAMES)
def test_estimates_are_unbiased_and_their_variance_matches_theory(name):
    n, k, runs = 500, 8, 3000
    true_counts = torch.tensor([200, 120, 80, 50, 30, 15, 5, 0])
    items = torch.repeat_interleave(torch.arange(k), true_counts)
    oracle = make_oracle(name, k, 1.0)
    estimates = _repeated_estimates(oracle, items, runs)
    variance = count_variance(oracle, n, true_counts.double())
    standard_error = (variance / runs).sqrt()
    assert ((estimates.mean(dim=0) - true_counts).abs() < 4 * standard_error).all()
    torch.testing.assert_close(estimates.var(dim=0), variance, rtol=0.15, atol=0)


def test_collect_support_equals_perturb_then_count_in_one_chunk():
    oracle = optimized_unary_encoding(30, 2.0)
    items = torch.randint(0, 30, (1000,), generator=torch.Generator().manual_seed(1))
    reports, event = perturb(oracle, items, _generator(3))
    support, collected_event = collect_support(oracle, items, _generator(3), chunk_size=1000)
    assert torch.equal(support, support_counts(oracle, reports))
    assert collected_event == event


@pytest.mark.parametrize("name", ORACLE_NAMES)
def test_support_counts_add_up(name):
    oracle = make_oracle(name, 6, 1.0)
    items = torch.randint(0, 6, (997,), generator=torch.Generator().manual_seed(2))
    support, _ = collect_support(oracle, items, _generator(), chunk_size=100)
    assert support.dtype == torch.int64 and support.shape == (6,)
    if oracle.unary:
        assert (support <= 997).all()
    else:
        assert support.sum().item() == 997  # one item per report


def test_collect_support_bounds_the_bits_held_at_once(monkeypatch):
    k, n = 5000, 10_000
    sizes = []

    def spy(oracle, items, generator):
        sizes.append(items.numel())
        return perturb(oracle, items, generator)

    monkeypatch.setattr(ldp, "perturb", spy)
    oracle = optimized_unary_encoding(k, 1.0)
    items = torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(3))
    support, _ = collect_support(oracle, items, _generator())
    assert sum(sizes) == n and len(sizes) > 1
    assert max(sizes) * k <= 1 << 24
    total_std = math.sqrt(k * count_variance(oracle, n))
    assert abs(estimate_counts(oracle, support, n).sum().item() - n) < 4 * total_std


def test_dp_events_give_epsilon_under_replace_one():
    grr = direct_encoding(7, 1.5)
    assert oracle_dp_event(grr) == dp_event.RandomizedResponseDpEvent(7 / (math.exp(1.5) + 6), 7)
    for name in ORACLE_NAMES:
        for epsilon in (0.5, 2.0):
            event = oracle_dp_event(make_oracle(name, 7, epsilon))
            assert _replace_one_epsilon(event) == pytest.approx(epsilon, abs=1e-3)
            # A user who reports three times spends three times ε.
            repeated = dp_event.ComposedDpEvent([event] * 3)
            assert _replace_one_epsilon(repeated) == pytest.approx(3 * epsilon, abs=1e-3)


def test_perturb_returns_the_oracle_event():
    oracle = symmetric_unary_encoding(3, 1.0)
    _, event = perturb(oracle, torch.tensor([0, 2]), _generator())
    assert event == oracle_dp_event(oracle)
    assert isinstance(event, dp_event.ComposedDpEvent) and len(event.events) == 2


def test_count_variance_adds_the_holders_term():
    # c (1-p-q)/(p-q): zero for SUE (q = 1-p), exactly c for OUE (p = 1/2), positive for GRR.
    grr, sue, oue = (make_oracle(n, 10, 1.0) for n in ORACLE_NAMES)
    assert count_variance(sue, 100, 50.0) == pytest.approx(count_variance(sue, 100))
    assert count_variance(oue, 100, 50.0) == pytest.approx(count_variance(oue, 100) + 50)
    assert count_variance(grr, 100, 50.0) > count_variance(grr, 100)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: make_oracle("rappor", 5, 1.0), r"oracle must be one of grr, sue, oue, auto"),
        (lambda: make_oracle("grr", 1, 1.0), r"num_categories must be >= 2 \(got 1\)"),
        (lambda: direct_encoding(5, 0.0), r"epsilon must be in \(0, 100.0\] \(got 0.0\)"),
        (lambda: symmetric_unary_encoding(5, -1.0), r"epsilon must be in \(0, 100.0\]"),
        (lambda: optimized_unary_encoding(5, math.inf), r"epsilon must be in \(0, 100.0\]"),
        (lambda: choose_oracle(5, 101.0), r"epsilon must be in \(0, 100.0\] \(got 101.0\)"),
    ],
)
def test_bad_oracle_arguments_are_refused_by_name(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def test_bad_items_support_and_sizes_are_refused_by_name():
    oracle = direct_encoding(4, 1.0)
    with pytest.raises(ConfigError, match=r"items must be a 1-D int64 tensor \(got torch.float32"):
        perturb(oracle, torch.zeros(3), _generator())
    with pytest.raises(ConfigError, match=r"items must be a 1-D int64 tensor .* shape \(1, 3\)"):
        perturb(oracle, torch.zeros(1, 3, dtype=torch.int64), _generator())
    with pytest.raises(ConfigError, match=r"items must lie in 0..3"):
        collect_support(oracle, torch.tensor([0, 4]), _generator())
    with pytest.raises(ConfigError, match=r"items must lie in 0..3"):
        perturb(oracle, torch.tensor([-1]), _generator())
    with pytest.raises(ConfigError, match=r"chunk_size must be >= 1 \(got 0\)"):
        collect_support(oracle, torch.tensor([0]), _generator(), chunk_size=0)
    with pytest.raises(ConfigError, match=r"support must have shape \[4\] \(got \(3,\)\)"):
        estimate_counts(oracle, torch.zeros(3), 10)
    with pytest.raises(ConfigError, match=r"num_users must be >= 1 \(got 0\)"):
        estimate_counts(oracle, torch.zeros(4), 0)
    with pytest.raises(ConfigError, match=r"num_users must be >= 1 \(got 0\)"):
        count_variance(oracle, 0)
