"""Byzantine-robust aggregation: aggregator links that a few malicious client updates cannot steer.

Each rule reads the round's n client updates as the rows of a matrix ``[n, d]``:

- **Krum** (Blanchard, El Mhamdi, Guerraoui, Stainer 2017): score(i) = Σ ‖Δ_i − Δ_j‖² over the
  n − f − 2 updates nearest to Δ_i; the update with the lowest score is the aggregate. Needs
  n > 2f + 2. **Multi-Krum** averages the m updates with the lowest scores.
- **Coordinate-wise median** and **β-trimmed mean** (Yin, Chen, Ramchandran, Bartlett 2018): per
  coordinate, the median of the n values, or the mean of what is left after removing the
  ⌊βn⌋ largest and the ⌊βn⌋ smallest.
- **Norm bounding** (Sun, Kairouz, Suresh, McMahan 2019, "Can You Really Backdoor Federated
  Learning?"): clip each update to L2 norm M, average, optionally add N(0, σ²) per coordinate
  ("weak DP").

Threat model: up to f of a round's clients send arbitrary updates (Byzantine); the server is
honest and sees every update in the clear. Client weights (self-reported dataset sizes) are
ignored, since a malicious client could inflate its own: every update counts once. Only norm
bounding is a function of the *sum* of (clipped) updates, so only it composes with secure
aggregation or encrypted sums (`check_secure_combination`); there the clipping runs on the clients
and bounds only honest-but-faulty ones, since a malicious client can skip it unless it proves the
bound (e.g. with zero-knowledge range proofs).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch
from torch import Tensor

from veil.errors import ConfigError, check
from veil.fl.links import ClientUpdates, Link, chain
from veil.params import Params, flatten, flatten_stacked, unflatten
from veil.privacy.client_dp import clip_l2
from veil.privacy.mechanisms import gaussian_mechanism

PROTECTIONS = ("none", "secagg", "he")
"""What the server sees of each update: ``none`` (in the clear), ``secagg`` (SecAgg+ masked sum),
``he`` (homomorphically encrypted sum)."""


# --- the rules, as pure functions of an update matrix [clients, dims] -----------------------------


def krum_scores(matrix: Tensor, num_byzantine: int) -> Tensor:
    """Krum score of each row: the sum of its squared distances to its n − f − 2 nearest other
    rows (``f = num_byzantine``). Shape ``[n]``; needs n > 2f + 2."""
    n = matrix.shape[0]
    _check_krum_clients(n, num_byzantine, "krum")
    distances = torch.cdist(matrix, matrix).pow(2)
    distances.fill_diagonal_(math.inf)  # a row is not its own neighbour
    nearest = distances.topk(n - num_byzantine - 2, dim=1, largest=False).values
    return nearest.sum(1)


def multi_krum_select(matrix: Tensor, num_byzantine: int, num_selected: int) -> Tensor:
    """Indices of the ``num_selected`` rows with the lowest Krum scores, best first (ties: lower
    index first). ``num_selected = 1`` is Krum's choice."""
    n = matrix.shape[0]
    check(
        1 <= num_selected <= n - num_byzantine,
        f"multi_krum needs 1 <= num_selected <= clients - num_byzantine = {n - num_byzantine} "
        f"(got num_selected={num_selected} for {n} clients)",
    )
    scores = krum_scores(matrix, num_byzantine)
    return torch.sort(scores, stable=True).indices[:num_selected]


def median_of_updates(matrix: Tensor) -> Tensor:
    """Per-coordinate median of the rows; for an even count, the mean of the two middle values."""
    ordered = matrix.sort(dim=0).values
    n = matrix.shape[0]
    return (ordered[(n - 1) // 2] + ordered[n // 2]) / 2


def trimmed_mean_of_updates(matrix: Tensor, trim_fraction: float) -> Tensor:
    """Per-coordinate mean after removing the k = ⌊β·n⌋ largest and k smallest values
    (``β = trim_fraction`` in [0, ½), so at least one value is left)."""
    _check_trim_fraction(trim_fraction)
    n = matrix.shape[0]
    k = trimmed_count(trim_fraction, n)
    return matrix.sort(dim=0).values[k : n - k].mean(0)


def trimmed_count(trim_fraction: float, num_clients: int) -> int:
    """How many values `trimmed_mean` removes from each end: ⌊β·n⌋ (rounded down)."""
    return math.floor(trim_fraction * num_clients + 1e-9)  # 0.29 · 100 counts as 29, not 28


# --- the rules as aggregator links ------------------------------------------------------------


def krum(num_byzantine: int) -> Link:
    """Aggregator link: the one update with the lowest Krum score (robust to ``num_byzantine`` = f
    malicious clients among n > 2f + 2)."""
    _check_byzantine(num_byzantine)
    return _matrix_link(lambda m: m[multi_krum_select(m, num_byzantine, 1)[0]])


def multi_krum(num_byzantine: int, num_selected: int) -> Link:
    """Aggregator link: the mean of the ``num_selected`` = m updates with the lowest Krum scores
    (m = 1 is Krum; m = n − f keeps every update Krum trusts)."""
    _check_byzantine(num_byzantine)
    check(num_selected >= 1, f"multi_krum num_selected must be >= 1 (got {num_selected})")
    return _matrix_link(lambda m: m[multi_krum_select(m, num_byzantine, num_selected)].mean(0))


def coordinate_median() -> Link:
    """Aggregator link: the coordinate-wise median of the updates (robust while fewer than half
    of a round's clients are malicious)."""
    return _matrix_link(median_of_updates)


def trimmed_mean(trim_fraction: float) -> Link:
    """Aggregator link: the coordinate-wise β-trimmed mean (robust to up to ⌊β·n⌋ malicious
    clients per round)."""
    _check_trim_fraction(trim_fraction)
    return _matrix_link(lambda m: trimmed_mean_of_updates(m, trim_fraction))


def norm_bounding(max_norm: float, noise_std: float = 0.0) -> Link:
    """Aggregator link (Sun et al. 2019): clip each update to L2 norm ``max_norm`` (veil's
    DP-FedAvg clipping, `veil.privacy.client_dp.clip_l2`), take the unweighted mean of the
    finite ones (an update with a NaN or infinite entry is dropped), then add N(0, ``noise_std``²)
    to every coordinate when ``noise_std`` > 0.

    The noise is "weak DP": it blunts backdoors, but it is NOT a formal differential-privacy
    guarantee (σ is not calibrated to the clip norm and the number of clients, and nothing is
    accounted), so the link returns no DP event. For a guarantee, use ``privacy`` (DP-FedAvg).
    """
    clip, noise = norm_bounding_for_secure_sum(max_norm, noise_std)
    return chain(clip, _matrix_link(_mean_of_finite_rows), noise)


def norm_bounding_for_secure_sum(max_norm: float, noise_std: float = 0.0) -> tuple[Link, Link]:
    """Norm bounding split around a secure sum: ``(client encoder link, server link)``.

    The first clips each update to ``max_norm`` on the clients (put it in the encoder chain before
    the SecAgg+ / HE encoder); the second adds the weak-DP noise to the decrypted mean (put it in
    the aggregator chain after the secure aggregator; it is the identity when ``noise_std`` is 0).
    Clipping on the client bounds honest-but-faulty clients only: a malicious client can skip it
    unless it proves its bound (zero-knowledge range proofs), which veil does not implement.
    """
    check(
        math.isfinite(max_norm) and max_norm > 0,
        f"norm_bounding max_norm must be a number > 0 (got {max_norm})",
    )
    check(
        math.isfinite(noise_std) and noise_std >= 0,
        f"norm_bounding noise_std must be a number >= 0 (got {noise_std})",
    )

    def add_noise(aggregate: Params, state: None, key: torch.Generator):
        if noise_std == 0:
            return aggregate, state, []
        device = next(iter(aggregate.values())).device
        # gaussian_mechanism draws N(0, (1 · σ)²); its event is dropped: weak DP is not accounted.
        noisy, _ = gaussian_mechanism(flatten(aggregate).to(key.device), 1.0, noise_std, key)
        return unflatten(noisy.to(device), aggregate), state, []

    return clip_l2(max_norm), Link(lambda params: None, add_noise)


ROBUST_AGGREGATORS: dict[str, Callable[..., Link]] = {
    "krum": krum,
    "multi_krum": multi_krum,
    "median": coordinate_median,
    "trimmed_mean": trimmed_mean,
    "norm_bounding": norm_bounding,
}

SECURE_SUM_COMPATIBLE: frozenset[str] = frozenset({"norm_bounding"})
"""Robust aggregators that need only the sum of (client-side clipped) updates."""


def build_robust_aggregator(name: str, **params: float) -> Link:
    """The robust aggregator link ``name`` (a key of `ROBUST_AGGREGATORS`) with its parameters."""
    return ROBUST_AGGREGATORS[_check_name(name)](**_check_params(name, params))


def check_robust_setting(name: str, params: dict[str, float], clients_per_round: int) -> None:
    """Refuse, before any round runs, a robust aggregator that cannot work with
    ``clients_per_round`` clients: Krum / Multi-Krum with n <= 2f + 2 or m > n − f, or a trimmed
    mean that trims nothing (⌊β·n⌋ = 0, the plain mean)."""
    build_robust_aggregator(name, **params)  # validates the name and the parameters
    n = clients_per_round
    check(n >= 1, f"clients_per_round must be >= 1 (got {n})")
    if name in ("krum", "multi_krum"):
        _check_krum_clients(n, params["num_byzantine"], name)
    if name == "multi_krum":
        limit = n - params["num_byzantine"]
        check(
            params["num_selected"] <= limit,
            f"multi_krum num_selected must be <= clients per round - num_byzantine = {limit} "
            f"(got {params['num_selected']})",
        )
    if name == "trimmed_mean":
        beta = params["trim_fraction"]
        check(
            trimmed_count(beta, n) >= 1,
            f"trimmed_mean trims ⌊{beta:g} · {n}⌋ = 0 updates from each end of {n} clients per "
            f"round, so it is the plain mean: raise trim_fraction to at least 1/{n}",
        )


def check_secure_combination(name: str, protection: str) -> None:
    """Refuse a robust aggregator that needs each client's update in the clear under a
    ``protection`` (one of `PROTECTIONS`) that shows the server only their sum."""
    _check_name(name)
    check(
        protection in PROTECTIONS, f"protection must be one of {PROTECTIONS} (got {protection!r})"
    )
    if protection == "none" or name in SECURE_SUM_COMPATIBLE:
        return
    what = {"secagg": "a SecAgg+ masked sum", "he": "an encrypted (HE) sum"}[protection]
    raise ConfigError(
        f"{name} needs each client's update in the clear; it cannot run on {what}, where the "
        "server sees only the sum: use norm_bounding (clipping on the clients, which bounds "
        "honest-but-faulty clients only), or drop the secure aggregation"
    )


# --- helpers ----------------------------------------------------------------------------------


def _matrix_link(rule: Callable[[Tensor], Tensor]) -> Link:
    """A stateless aggregator link applying ``rule`` to the ``[clients, dims]`` update matrix;
    an empty round gives the zero update, as `weighted_mean` does."""

    def apply(updates: ClientUpdates, state: None, key: torch.Generator):
        deltas = updates.deltas
        if updates.num_clients == 0:
            return {k: v.new_zeros(v.shape[1:]) for k, v in deltas.items()}, state, []
        like = {k: v[0] for k, v in deltas.items()}
        return unflatten(rule(flatten_stacked(deltas)), like), state, []

    return Link(lambda params: None, apply)


def _mean_of_finite_rows(matrix: Tensor) -> Tensor:
    """The mean of the rows without a NaN or infinite entry (no honest client sends one, and one
    such row would make the mean NaN); zero if none is left."""
    finite = matrix[matrix.isfinite().all(1)]
    return finite.mean(0) if len(finite) else matrix.new_zeros(matrix.shape[1])


def _check_name(name: str) -> str:
    check(
        name in ROBUST_AGGREGATORS,
        f"robust aggregator must be one of {list(ROBUST_AGGREGATORS)} (got {name!r})",
    )
    return name


def _check_params(name: str, params: dict[str, float]) -> dict[str, float]:
    accepted = inspect.signature(ROBUST_AGGREGATORS[name]).parameters
    unknown = sorted(set(params) - set(accepted))
    missing = [
        p
        for p, spec in accepted.items()
        if spec.default is inspect.Parameter.empty and p not in params
    ]
    check(
        not unknown and not missing,
        f"robust aggregator {name!r} takes {list(accepted)} "
        f"(got unknown {unknown}, missing {missing})",
    )
    return params


def _check_byzantine(num_byzantine: int) -> None:
    check(
        isinstance(num_byzantine, int) and num_byzantine >= 0,
        f"num_byzantine must be an integer >= 0 (got {num_byzantine!r})",
    )


def _check_krum_clients(num_clients: int, num_byzantine: int, name: str) -> None:
    check(
        num_clients > 2 * num_byzantine + 2,
        f"{name} with num_byzantine={num_byzantine} needs more than 2f + 2 = "
        f"{2 * num_byzantine + 2} clients per round (got {num_clients}): raise "
        "federation.clients_per_round or lower num_byzantine",
    )


def _check_trim_fraction(trim_fraction: float) -> None:
    check(
        0 <= trim_fraction < 0.5,
        f"trimmed_mean trim_fraction must be in [0, 0.5) (got {trim_fraction})",
    )
