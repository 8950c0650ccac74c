"""Local-DP frequency oracles: each user randomizes one item; the server estimates item counts.

Threat model: the server (and anyone who sees the reports) is untrusted; each user's report is
ε-LDP on its own, so it reveals little about that user's item whatever else is known.

Every oracle here is a *pure* protocol in the sense of Wang, Blocki, Li and Jha, "Locally
Differentially Private Protocols for Frequency Estimation" (USENIX Security 2017): a report
*supports* item ``v`` with probability ``p`` when the user holds ``v`` and ``q`` when it holds any
other item. With ``S_v`` the number of the ``n`` reports that support ``v``, the count estimate

    ĉ_v = (S_v - n q) / (p - q)

is unbiased, with variance ``n q(1-q) / (p-q)^2 + c_v (1-p-q) / (p-q)``; Wang et al.'s
``Var*`` is the first term (``c_v ≈ 0``, the many rare items).

- ``"grr"`` direct encoding / k-ary randomized response (Warner 1965): report the item with
  probability ``p = e^ε / (e^ε + k - 1)``, else one of the other ``k - 1`` uniformly;
  supports ``v`` iff the report is ``v``, so ``q = 1 / (e^ε + k - 1)``.
- ``"sue"`` symmetric unary encoding (basic one-time RAPPOR, Erlingsson, Pihur, Korolova 2014):
  one-hot encode, keep each bit with probability ``p = e^{ε/2} / (e^{ε/2} + 1)``, flip it
  otherwise (``q = 1 - p``); supports ``v`` iff bit ``v`` is set.
- ``"oue"`` optimized unary encoding: bit of the held item set with ``p = 1/2``, every other
  bit with ``q = 1 / (e^ε + 1)``.

Privacy unit: one report of one user, any two items as neighbours (replace-one). A user who
reports ``T`` times, with fresh randomness each time, spends ``T ε``: account it as
``ComposedDpEvent([event] * T)``, not ``SelfComposedDpEvent(event, T)``, whose count the PLD
accountant of dp-accounting 0.6 ignores for randomized response (it would report ``ε``).

Floating point: the reports are Bernoulli and uniform choices, so there is no additive-noise
leak of the Mironov (2012) kind. The bits of items a user does not hold compare float32 uniforms
with ``q``, which rounds ``q`` up to a multiple of ``2^-24``; that only makes those bits less
revealing. The draws that carry the held item (its bit, or whether GRR keeps it) use float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from dp_accounting import dp_event

from veil.errors import check

__all__ = [
    "MAX_EPSILON",
    "ORACLES",
    "FrequencyOracle",
    "choose_oracle",
    "collect_support",
    "count_variance",
    "direct_encoding",
    "estimate_counts",
    "make_oracle",
    "optimized_unary_encoding",
    "oracle_dp_event",
    "perturb",
    "support_counts",
    "symmetric_unary_encoding",
]

# Oracle names `make_oracle` accepts; "auto" picks "grr" or "oue" by `choose_oracle`.
ORACLES: tuple[str, ...] = ("grr", "sue", "oue", "auto")

# Largest ε accepted: beyond it e^ε overflows long before the report hides anything.
MAX_EPSILON = 100.0

# Unary encodings are simulated in chunks of users holding at most this many bits at once.
_BITS_PER_CHUNK = 1 << 24


@dataclass(frozen=True)
class FrequencyOracle:
    """A pure LDP frequency oracle over ``num_categories`` items at ``epsilon`` per report.

    Attributes:
        name: ``"grr"``, ``"sue"`` or ``"oue"``.
        num_categories: ``k``, the number of items; users hold one of ``0 .. k - 1``.
        epsilon: each report is ``epsilon``-LDP (pure, ``δ = 0``).
        p: probability that a report supports the item its user holds.
        q: probability that a report supports an item its user does not hold.
    """

    name: str
    num_categories: int
    epsilon: float
    p: float
    q: float

    @property
    def unary(self) -> bool:
        """Whether reports are bit vectors ``[k]`` (unary encoding) rather than one item id."""
        return self.name in ("sue", "oue")


def _check_oracle_args(num_categories: int, epsilon: float) -> None:
    check(num_categories >= 2, f"num_categories must be >= 2 (got {num_categories})")
    check(0 < epsilon <= MAX_EPSILON, f"epsilon must be in (0, {MAX_EPSILON}] (got {epsilon})")


def direct_encoding(num_categories: int, epsilon: float) -> FrequencyOracle:
    """Generalized (k-ary) randomized response: ``p = e^ε/(e^ε+k-1)``, ``q = 1/(e^ε+k-1)``."""
    _check_oracle_args(num_categories, epsilon)
    denominator = math.exp(epsilon) + num_categories - 1
    p, q = math.exp(epsilon) / denominator, 1.0 / denominator
    return FrequencyOracle("grr", num_categories, epsilon, p, q)


def symmetric_unary_encoding(num_categories: int, epsilon: float) -> FrequencyOracle:
    """Basic one-time RAPPOR: each bit kept w.p. ``p = e^{ε/2}/(e^{ε/2}+1)``, ``q = 1 - p``."""
    _check_oracle_args(num_categories, epsilon)
    p = 1.0 / (1.0 + math.exp(-epsilon / 2))
    return FrequencyOracle("sue", num_categories, epsilon, p, 1.0 - p)


def optimized_unary_encoding(num_categories: int, epsilon: float) -> FrequencyOracle:
    """Optimized unary encoding: ``p = 1/2``, ``q = 1/(e^ε+1)`` (minimizes ``Var*`` for UE)."""
    _check_oracle_args(num_categories, epsilon)
    return FrequencyOracle("oue", num_categories, epsilon, 0.5, 1.0 / (math.exp(epsilon) + 1))


def _var_star(oracle: FrequencyOracle) -> float:
    return oracle.q * (1 - oracle.q) / (oracle.p - oracle.q) ** 2


def choose_oracle(num_categories: int, epsilon: float) -> str:
    """``"grr"`` or ``"oue"``, whichever has the smaller ``Var*`` for ``k`` items at ``ε``.

    ``Var*_GRR ∝ (e^ε + k - 2)`` and ``Var*_OUE ∝ 4 e^ε`` (same denominator ``(e^ε - 1)^2``), so
    GRR wins exactly when ``k < 3 e^ε + 2`` (Wang et al. 2017). SUE never wins.
    """
    grr = direct_encoding(num_categories, epsilon)
    oue = optimized_unary_encoding(num_categories, epsilon)
    return "grr" if _var_star(grr) < _var_star(oue) else "oue"


def make_oracle(name: str, num_categories: int, epsilon: float) -> FrequencyOracle:
    """The oracle called ``name`` (one of `ORACLES`); ``"auto"`` resolves by `choose_oracle`."""
    check(name in ORACLES, f"oracle must be one of {', '.join(ORACLES)} (got {name!r})")
    if name == "auto":
        name = choose_oracle(num_categories, epsilon)
    constructors = {
        "grr": direct_encoding,
        "sue": symmetric_unary_encoding,
        "oue": optimized_unary_encoding,
    }
    return constructors[name](num_categories, epsilon)


def oracle_dp_event(oracle: FrequencyOracle) -> dp_event.DpEvent:
    """The dp-accounting event of one report (evaluate with ``NeighborRel.REPLACE_ONE``).

    - GRR is ``RandomizedResponseDpEvent(k / (e^ε + k - 1), k)``: with that probability the
      event's mechanism outputs a uniform bucket, which yields the true item w.p. exactly ``p``.
    - SUE differs between two neighbouring items only in their two bits, each an independent
      binary randomized response at ``ε/2``: the composition of two such events, exactly.
    - OUE's two differing bits are not symmetric, and dp-accounting has no event for them. By
      Kairouz, Oh and Viswanath (2015) every ε-DP mechanism is a post-processing of binary
      randomized response at ``ε``, so that event bounds OUE's privacy loss: it never
      under-counts, and at ``δ = 0`` it gives exactly ``ε``.
    """
    k, eps = oracle.num_categories, oracle.epsilon
    if oracle.name == "grr":
        return dp_event.RandomizedResponseDpEvent(k / (math.exp(eps) + k - 1), k)
    if oracle.name == "sue":
        half = dp_event.RandomizedResponseDpEvent(2 / (math.exp(eps / 2) + 1), 2)
        return dp_event.ComposedDpEvent([half, half])
    return dp_event.RandomizedResponseDpEvent(2 / (math.exp(eps) + 1), 2)


def _check_items(items: torch.Tensor, num_categories: int) -> None:
    check(
        items.dtype == torch.int64 and items.ndim == 1,
        f"items must be a 1-D int64 tensor (got {items.dtype} with shape {tuple(items.shape)})",
    )
    check(
        items.numel() == 0 or (bool(items.min() >= 0) and bool(items.max() < num_categories)),
        f"items must lie in 0..{num_categories - 1}",
    )


def perturb(
    oracle: FrequencyOracle, items: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, dp_event.DpEvent]:
    """Each user's randomized report of its item, and the DP event of one report.

    ``items``: int64 ``[n]``, one item per user. Reports are int64 ``[n]`` item ids for GRR and
    bool ``[n, k]`` bit vectors for SUE/OUE (``k`` bits per user: chunk large populations with
    `collect_support`). ``generator`` is privacy noise: use `veil.randomness.noise_generator`.
    """
    _check_items(items, oracle.num_categories)
    k, n = oracle.num_categories, items.numel()
    if oracle.unary:
        bits = torch.rand(n, k, generator=generator) < oracle.q
        held = torch.rand(n, dtype=torch.float64, generator=generator) < oracle.p
        bits.scatter_(1, items[:, None], held[:, None])
        return bits, oracle_dp_event(oracle)
    keep = torch.rand(n, dtype=torch.float64, generator=generator) < oracle.p
    other = torch.randint(0, k - 1, (n,), generator=generator)
    other += (other >= items).long()  # uniform over the k - 1 items that are not the user's
    return torch.where(keep, items, other), oracle_dp_event(oracle)


def support_counts(oracle: FrequencyOracle, reports: torch.Tensor) -> torch.Tensor:
    """int64 ``[k]``: how many reports support each item (what the server aggregates)."""
    if oracle.unary:
        # Summing the bits as bytes into int32 is about twice as fast as summing bools.
        return reports.view(torch.uint8).sum(dim=0, dtype=torch.int32).long()
    return torch.bincount(reports, minlength=oracle.num_categories)


def collect_support(
    oracle: FrequencyOracle,
    items: torch.Tensor,
    generator: torch.Generator,
    *,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, dp_event.DpEvent]:
    """Simulate every user's report and return the support counts ``[k]`` and one report's event.

    Users are processed ``chunk_size`` at a time (default: as many as fit in 2^24 report bits), so
    a unary encoding of 100k users over 5k items never holds 500M bits at once.
    """
    _check_items(items, oracle.num_categories)
    if chunk_size is None:
        chunk_size = max(1, _BITS_PER_CHUNK // oracle.num_categories)
    check(chunk_size >= 1, f"chunk_size must be >= 1 (got {chunk_size})")
    support = torch.zeros(oracle.num_categories, dtype=torch.int64)
    for chunk in torch.split(items, chunk_size):
        reports, _ = perturb(oracle, chunk, generator)
        support += support_counts(oracle, reports)
    return support, oracle_dp_event(oracle)


def estimate_counts(oracle: FrequencyOracle, support: torch.Tensor, num_users: int) -> torch.Tensor:
    """float64 ``[k]``: the unbiased count estimate ``(S_v - n q) / (p - q)``.

    It can be negative or exceed ``n``; clip or project only after judging unbiasedness.
    """
    check(num_users >= 1, f"num_users must be >= 1 (got {num_users})")
    check(
        support.shape == (oracle.num_categories,),
        f"support must have shape [{oracle.num_categories}] (got {tuple(support.shape)})",
    )
    return (support.double() - num_users * oracle.q) / (oracle.p - oracle.q)


def count_variance(
    oracle: FrequencyOracle, num_users: int, true_count: float | torch.Tensor = 0.0
) -> float | torch.Tensor:
    """Variance of `estimate_counts` for an item that ``true_count`` of ``num_users`` users hold.

    ``n q(1-q)/(p-q)^2 + c (1-p-q)/(p-q)``; with the default ``c = 0`` it is Wang et al.'s
    ``Var*``. Divide by ``n^2`` for the variance of the estimated frequency ``ĉ / n``.
    """
    check(num_users >= 1, f"num_users must be >= 1 (got {num_users})")
    p, q = oracle.p, oracle.q
    return num_users * _var_star(oracle) + true_count * (1 - p - q) / (p - q)
