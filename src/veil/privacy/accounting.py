"""Privacy accounting: (ε, δ) of a tree of dp-accounting events, by PLD (default) or RDP.

The accountants are dp-accounting's own: ``PLDAccountant`` (privacy loss distributions, Koskela
et al. 2020, Doroshenko et al. 2022: numerically tight, pessimistic) and ``RdpAccountant`` (Rényi
DP, Mironov 2017: a looser upper bound, fast; on ``RDP_ORDERS``). veil only builds events,
normalises compositions and validates arguments; every ε comes from an accountant.

PLD discretization: the PLD accountant rounds privacy losses up to a grid of width w
(``value_discretization_interval``), so its ε is an upper bound for every w, tight as w → 0; its
cost grows as (range of the privacy loss)/w. No fixed w serves all events (10⁻⁴ is 6% off at
ε = 0.01 and takes 3 s at ε = 13), so veil refines: w = 10⁻², then tenfold finer (but never
finer than ε/10⁴) until ε moves by less than 2% between passes. For the subsampled Gaussian the
error shrinks about quadratically in w, and the last pass is within 0.2% of a w = 10⁻⁶..10⁻⁵ run
(checked from ε ≈ 5·10⁻⁴ to ε ≈ 170); for a discrete loss such as randomized response's it is
at most one grid step per release (about 0.1% at ε = 1). The 14,000-step DP-SGD case (σ = 1.1,
q = 256/60000) takes three passes (w = 10⁻², 10⁻³, 2.4·10⁻⁴), about 0.4 s.

Neighbouring relations: ``add_remove`` (one record added or removed; DP-SGD with Poisson
sampling, DP-FedAvg) and ``replace_one`` (one record's value changes; randomized response, and
sampling a fixed-size batch without replacement). Under ``replace_one`` dp-accounting's two
accountants read a bare ``GaussianDpEvent``/``LaplaceDpEvent`` differently: PLD takes its noise
multiplier relative to one record's norm bound C, as the event's definition says, so the released
sum moves by 2C; RDP takes it relative to the whole replace-one change, i.e. it assumes a shift of
C and under-counts. ``epsilon`` refuses that RDP case rather than report too small an ε.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence

from dp_accounting import dp_event
from dp_accounting.pld.pld_privacy_accountant import PLDAccountant
from dp_accounting.privacy_accountant import NeighboringRelation, PrivacyAccountant
from dp_accounting.rdp.rdp_privacy_accountant import DEFAULT_RDP_ORDERS, RdpAccountant

from veil.errors import ConfigError

ACCOUNTANTS = ("pld", "rdp")
NEIGHBORING = ("add_remove", "replace_one")

PLD_FIRST_INTERVAL = 1e-2
"""Grid width of the first PLD pass."""
PLD_BINS_PER_EPSILON = 10_000
"""The PLD grid is never refined below ε / PLD_BINS_PER_EPSILON."""
PLD_CONVERGED = 0.02
"""Refinement stops when ε changes by less than this fraction between passes."""

RDP_ORDERS = tuple(
    sorted({*DEFAULT_RDP_ORDERS, *(m * 2**k for m in (5, 6, 7, 8) for k in range(4, 10))})
)
"""dp-accounting's default Rényi orders plus the integers m·2^k (m = 5..8, k = 4..9), up to 4096.
A small ε (≲ 0.1) is attained at orders in the hundreds or thousands, where the defaults alone
are 11% high at ε = 0.011 and 4.6× at ε = 0.0008; the extra orders cost about 0.1 s per distinct
subsampled event."""

NOISE_MULTIPLIER_SEARCH_RANGE = (0.1, 1e5)
"""``calibrate_noise_multiplier`` looks for σ in this range."""

_RELATIONS = {
    "add_remove": NeighboringRelation.ADD_OR_REMOVE_ONE,
    "replace_one": NeighboringRelation.REPLACE_ONE,
}


def compose(events: Sequence[dp_event.DpEvent]) -> dp_event.DpEvent:
    """One event for a sequence of (adaptively) composed releases.

    Nested ``ComposedDpEvent``/``SelfComposedDpEvent`` are flattened and identical events grouped
    into ``SelfComposedDpEvent(event, count)`` (by associativity this is the same composition),
    so an accountant self-composes each distinct mechanism once: thousands of releases cost as
    much as a few. ``NoOpDpEvent`` is dropped. A single event is returned as is; ``[]`` gives
    ``NoOpDpEvent()``.
    """
    events = list(events)
    for event in events:
        _check_event(event)
    if not events:
        return dp_event.NoOpDpEvent()
    if len(events) == 1:
        return events[0]
    counts: dict[str, list] = {}
    for event, count in _flatten(events, 1):
        counts.setdefault(repr(event), [event, 0])[1] += count
    grouped = []
    for event, count in counts.values():
        if count == 1:
            grouped.append(event)
        elif _contains_randomized_response(event):
            grouped.extend([event] * count)  # see _expand_randomized_response
        else:
            grouped.append(dp_event.SelfComposedDpEvent(event, count))
    return dp_event.ComposedDpEvent(grouped)


def _contains_randomized_response(event: dp_event.DpEvent) -> bool:
    if isinstance(event, dp_event.RandomizedResponseDpEvent):
        return True
    children = getattr(event, "events", None) or [getattr(event, "event", None)]
    return any(c is not None and _contains_randomized_response(c) for c in children)


def _expand_randomized_response(event: dp_event.DpEvent) -> dp_event.DpEvent:
    """Rewrite ``SelfComposedDpEvent(e, n)`` as ``n`` copies of ``e`` wherever ``e`` contains
    randomized response: dp-accounting 0.6's PLD accountant ignores the count for
    ``RandomizedResponseDpEvent`` (it reports one release's ε for ``n`` of them)."""
    if isinstance(event, dp_event.SelfComposedDpEvent):
        inner = _expand_randomized_response(event.event)
        if _contains_randomized_response(inner):
            return dp_event.ComposedDpEvent([inner] * event.count)
        return dp_event.SelfComposedDpEvent(inner, event.count)
    if isinstance(event, dp_event.ComposedDpEvent):
        return dp_event.ComposedDpEvent([_expand_randomized_response(e) for e in event.events])
    return event


def epsilon(
    event: dp_event.DpEvent,
    delta: float,
    accountant: str = "pld",
    neighboring: str = "add_remove",
) -> float:
    """The ε for which ``event`` is (ε, δ)-DP under ``neighboring``, by ``accountant``.

    PLD (default) refines its grid as described in the module docstring; RDP uses
    ``RDP_ORDERS``. ``inf`` if the event contains a ``NonPrivateDpEvent``. ConfigError if the
    accountant cannot account the event under ``neighboring`` (the message lists the
    combinations that can).
    """
    _check_event(event)
    _check_delta(delta)
    _check_choice("accountant", accountant, ACCOUNTANTS)
    _check_choice("neighboring", neighboring, NEIGHBORING)
    if not _make(accountant, neighboring).supports(event):
        able = [
            f"accountant={a!r}, neighboring={n!r}"
            for a in ACCOUNTANTS
            for n in NEIGHBORING
            if _make(a, n).supports(event) and not _ambiguous(a, n, event)
        ]
        raise ConfigError(
            f"accountant {accountant!r} cannot account {_names(event)} under neighboring "
            f"{neighboring!r}; " + (f"use {' or '.join(able)}" if able else "no accountant can")
        )
    if _ambiguous(accountant, neighboring, event):
        raise ConfigError(
            "accountant 'rdp' under neighboring 'replace_one' reads a Gaussian or Laplace noise "
            "multiplier relative to the whole replace-one change, but the event defines it "
            "relative to one record's norm bound C (a change of up to 2C), so it would "
            "under-count: use accountant='pld', which accounts the 2C shift"
        )
    if accountant == "rdp":
        return float(_make("rdp", neighboring).compose(event).get_epsilon(delta))
    event = _expand_randomized_response(event)
    return _pld_epsilon(event, delta, neighboring)


def dpsgd_event(noise_multiplier: float, sample_rate: float, steps: int) -> dp_event.DpEvent:
    """T steps of the Poisson-subsampled Gaussian: each record joins a step's batch with
    probability q, and the batch's clipped sum gets N(0, σ²C²) (Abadi et al. 2016).

    ``SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(σ)), T)``; account it with
    the ``add_remove`` relation (σ is relative to the clipping norm C).
    """
    _check_noise_multiplier(noise_multiplier)
    _check_sample_rate(sample_rate)
    _check_steps(steps)
    step = dp_event.PoissonSampledDpEvent(sample_rate, dp_event.GaussianDpEvent(noise_multiplier))
    return dp_event.SelfComposedDpEvent(step, int(steps))


def dpsgd_epsilon(
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: str = "pld",
) -> float:
    """ε of ``dpsgd_event(σ, q, T)`` at δ, add/remove adjacency."""
    return epsilon(dpsgd_event(noise_multiplier, sample_rate, steps), delta, accountant)


def fixed_size_event(
    population: int, sample_size: int, noise_multiplier: float, steps: int
) -> dp_event.DpEvent:
    """T steps that each draw ``sample_size`` of ``population`` records without replacement and
    add Gaussian noise to the sample's sum.

    ``SelfComposedDpEvent(SampledWithoutReplacementDpEvent(N, m, GaussianDpEvent(σ)), T)``.
    Account it with ``neighboring="replace_one"`` and ``accountant="rdp"`` (dp-accounting's PLD
    accountant has no sampling-without-replacement analysis). σ follows dp-accounting's RDP
    analysis of this event (Wang, Balle, Kasiviswanathan 2019, Thm. 27): noise std divided by
    the *replace-one* L2 sensitivity. For a sum of records clipped to norm C that sensitivity is
    2C, so the noise std must be 2·C·σ (not C·σ as for ``dpsgd_event``).
    """
    for name, number in (("population", population), ("sample size", sample_size)):
        if isinstance(number, bool) or not isinstance(number, numbers.Integral) or number < 1:
            raise ConfigError(f"{name} must be an integer >= 1 (got {number!r})")
    if sample_size > population:
        raise ConfigError(
            f"sample size must be in [1, population={population}] (got {sample_size})"
        )
    _check_noise_multiplier(noise_multiplier)
    _check_steps(steps)
    step = dp_event.SampledWithoutReplacementDpEvent(
        int(population), int(sample_size), dp_event.GaussianDpEvent(noise_multiplier)
    )
    return dp_event.SelfComposedDpEvent(step, int(steps))


def calibrate_noise_multiplier(
    target_epsilon: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: str = "pld",
    rel_tol: float = 1e-3,
) -> float:
    """The smallest σ with ``dpsgd_epsilon(σ, q, T, δ) <= target_epsilon``, to ``rel_tol``.

    Bisection on log σ inside ``NOISE_MULTIPLIER_SEARCH_RANGE``. The result σ satisfies
    ε(σ) ≤ target and ε(σ·(1 - rel_tol)) > target, both checked with ``dpsgd_epsilon`` itself.
    ConfigError if no σ in the range meets the target, or if every σ down to the bottom of the
    range already does (then the guarantee does not come from the noise).
    """
    if isinstance(target_epsilon, bool) or not isinstance(target_epsilon, numbers.Real):
        raise ConfigError(f"target epsilon must be a number > 0 (got {target_epsilon!r})")
    if not 0 < target_epsilon < math.inf:
        raise ConfigError(f"target epsilon must be > 0 and finite (got {target_epsilon})")
    if isinstance(rel_tol, bool) or not isinstance(rel_tol, numbers.Real) or not 0 < rel_tol < 1:
        raise ConfigError(f"rel_tol must be in (0, 1) (got {rel_tol!r})")
    _check_sample_rate(sample_rate)
    _check_steps(steps)
    _check_delta(delta)
    _check_choice("accountant", accountant, ACCOUNTANTS)

    @functools.cache
    def eps(sigma: float) -> float:
        return dpsgd_epsilon(sigma, sample_rate, steps, delta, accountant)

    low_limit, high_limit = NOISE_MULTIPLIER_SEARCH_RANGE
    setting = f"sample rate {sample_rate}, steps {steps}, delta {delta}"
    lo, hi = 1.0, 1.0
    if eps(1.0) > target_epsilon:
        while eps(hi) > target_epsilon:
            if hi >= high_limit:
                raise ConfigError(
                    f"target epsilon {target_epsilon} is unreachable: noise multiplier "
                    f"{high_limit:g} still gives epsilon {eps(hi):.4g} at {setting}; raise the "
                    "target or delta, or lower the sample rate or steps"
                )
            lo, hi = hi, min(2 * hi, high_limit)
    else:
        while eps(lo) <= target_epsilon:
            if lo <= low_limit:
                raise ConfigError(
                    f"target epsilon {target_epsilon} is met by every noise multiplier down to "
                    f"{low_limit} (epsilon {eps(lo):.4g} there) at {setting}: the guarantee "
                    "does not come from the noise; lower the target or delta (delta >= sample "
                    "rate gives epsilon 0)"
                )
            lo, hi = max(lo / 2, low_limit), lo
    while True:
        certificate = hi * (1 - rel_tol)
        final = math.sqrt(lo * hi) >= certificate
        mid = certificate if final else math.sqrt(lo * hi)
        if eps(mid) > target_epsilon:
            if final:
                return hi
            lo = mid
        else:
            hi = mid


def _pld_epsilon(event: dp_event.DpEvent, delta: float, neighboring: str) -> float:
    """PLD ε on a grid refined tenfold per pass (see the module docstring)."""
    interval = PLD_FIRST_INTERVAL
    eps = _make("pld", neighboring, interval).compose(event).get_epsilon(delta)
    while 0 < eps < math.inf:
        finer = max(interval / 10, eps / PLD_BINS_PER_EPSILON)
        if finer > interval / 2:
            break
        previous, interval = eps, finer
        eps = _make("pld", neighboring, interval).compose(event).get_epsilon(delta)
        if abs(previous - eps) <= PLD_CONVERGED * eps:
            break
    return float(eps)


def _make(
    accountant: str, neighboring: str, interval: float = PLD_FIRST_INTERVAL
) -> PrivacyAccountant:
    relation = _RELATIONS[neighboring]
    if accountant == "rdp":
        return RdpAccountant(RDP_ORDERS, relation)
    return PLDAccountant(relation, value_discretization_interval=interval)


def _flatten(events: Sequence[dp_event.DpEvent], count: int):
    """(event, count) pairs of the non-composite events under ``events``, each run ``count``×."""
    for event in events:
        if isinstance(event, dp_event.ComposedDpEvent):
            yield from _flatten(event.events, count)
        elif isinstance(event, dp_event.SelfComposedDpEvent):
            yield from _flatten([event.event], count * event.count)
        elif not isinstance(event, dp_event.NoOpDpEvent):
            yield event, count


def _ambiguous(accountant: str, neighboring: str, event: dp_event.DpEvent) -> bool:
    """RDP under replace_one with a Gaussian/Laplace event outside any sampling event: RDP would
    take its noise multiplier relative to the replace-one sensitivity (see the module docstring)."""
    return accountant == "rdp" and neighboring == "replace_one" and _has_bare_additive_noise(event)


def _has_bare_additive_noise(event: dp_event.DpEvent) -> bool:
    if isinstance(event, dp_event.GaussianDpEvent | dp_event.LaplaceDpEvent):
        return True
    if isinstance(event, dp_event.ComposedDpEvent):
        return any(_has_bare_additive_noise(e) for e in event.events)
    if isinstance(event, dp_event.SelfComposedDpEvent | dp_event.RepeatAndSelectDpEvent):
        return _has_bare_additive_noise(event.event)
    return False


def _names(event: dp_event.DpEvent) -> str:
    """The distinct event classes in ``event``'s tree, for messages."""
    found: list[str] = []

    def visit(e: dp_event.DpEvent) -> None:
        if type(e).__name__ not in found:
            found.append(type(e).__name__)
        for child in getattr(e, "events", None) or [getattr(e, "event", None)]:
            if isinstance(child, dp_event.DpEvent):
                visit(child)

    visit(event)
    return "/".join(found)


def _check_event(event: dp_event.DpEvent) -> None:
    if not isinstance(event, dp_event.DpEvent):
        raise ConfigError(f"event must be a dp_accounting DpEvent (got {type(event).__name__})")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {list(choices)} (got {value!r})")


def _check_delta(delta: float) -> None:
    if isinstance(delta, bool) or not isinstance(delta, numbers.Real) or not 0 < delta < 1:
        raise ConfigError(f"delta must be in (0, 1) (got {delta!r})")


def _check_noise_multiplier(noise_multiplier: float) -> None:
    if isinstance(noise_multiplier, bool) or not isinstance(noise_multiplier, numbers.Real):
        raise ConfigError(f"noise multiplier must be a number > 0 (got {noise_multiplier!r})")
    if not noise_multiplier > 0:
        raise ConfigError(f"noise multiplier must be > 0 (got {noise_multiplier})")
    if not math.isfinite(noise_multiplier):
        raise ConfigError(f"noise multiplier must be finite (got {noise_multiplier})")


def _check_sample_rate(sample_rate: float) -> None:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Real):
        raise ConfigError(f"sample rate must be in (0, 1] (got {sample_rate!r})")
    if not 0 < sample_rate <= 1:
        raise ConfigError(f"sample rate must be in (0, 1] (got {sample_rate})")


def _check_steps(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ConfigError(f"steps must be an integer >= 1 (got {steps!r})")
