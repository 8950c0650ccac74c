"""Client-level DP for a federated run, from its config: links, noise calibration, ledger, claim.

The privacy unit is a client: neighbouring federations differ by one client's whole data set.
Each round releases a noised mean of clipped updates; its event is the Gaussian mechanism,
Poisson-subsampled at the client sampling rate q (q = 1 when every client takes part).
"""

from __future__ import annotations

from dataclasses import dataclass

from veil.config import PrivacyConfig, RunConfig
from veil.errors import ConfigError
from veil.fl.links import Link, identity
from veil.privacy.accounting import calibrate_noise_multiplier
from veil.privacy.client_dp import (
    adaptive_clipped_gaussian_sum,
    clip_l2,
    gaussian_sum,
    poisson_sampling,
)
from veil.privacy.ledger import LedgerSettings


@dataclass(frozen=True)
class ClientDpPlan:
    """The DP pieces of a run: encoder and aggregator links, and what the claim must say."""

    encoder: Link
    aggregator: Link
    noise_multiplier: float
    sampling_rate: float
    ledger: LedgerSettings
    config: PrivacyConfig

    def claim(self, epsilon: float, rounds: int) -> str:
        """One sentence: who learns what, under which guarantee."""
        c = self.config
        clip = (
            f"adaptive clip norm (start {c.clip_norm:g}, quantile {c.target_quantile:g})"
            if c.adaptive_clipping
            else f"clip norm {c.clip_norm:g}"
        )
        sampling = (
            "every client each round"
            if self.sampling_rate == 1
            else f"client sampling rate {self.sampling_rate:g}"
        )
        decay = "" if c.noise_decay == 1 else f", decaying ×{c.noise_decay:g} per round"
        return (
            f"The released models are (ε = {epsilon:.3g}, δ = {c.delta:g})-differentially private "
            f"at the client level after {rounds} rounds (DP-FedAvg: {clip}, Gaussian noise "
            f"multiplier {self.noise_multiplier:.3g}{decay} on the sum, {sampling}, "
            f"{c.accountant.upper()} "
            "accounting); the server still sees each sampled client's clipped update in the clear "
            "(no secure aggregation)."
        )


def client_sampling(config: RunConfig, num_clients: int) -> tuple[float, float]:
    """(sampling rate q, expected clients per round) for client-level accounting."""
    fed = config.federation
    if fed.poisson_rate is not None:
        return fed.poisson_rate, fed.poisson_rate * num_clients
    per_round = fed.clients_per_round or (
        max(1, round(fed.fraction * num_clients)) if fed.fraction else num_clients
    )
    if per_round < num_clients:
        raise ConfigError(
            "client-level DP accounts for Poisson client sampling: set federation.poisson_rate, or "
            f"let every client take part each round (got {per_round} of {num_clients} per round)"
        )
    return 1.0, float(num_clients)


def client_dp_plan(config: RunConfig, num_clients: int) -> ClientDpPlan:
    """Links and accounting settings for ``config.privacy`` (which must be set)."""
    privacy = config.privacy
    rate, expected = client_sampling(config, num_clients)
    sigma = privacy.noise_multiplier
    if sigma is None:
        sigma = calibrate_noise_multiplier(
            privacy.target_epsilon,
            rate,
            config.federation.rounds,
            privacy.delta,
            privacy.accountant,
        )
    sampling = poisson_sampling(rate)
    if privacy.adaptive_clipping:
        encoder = identity()  # the aggregator clips, to the clip norm it adapts
        aggregator = adaptive_clipped_gaussian_sum(
            sigma,
            privacy.clip_norm,
            privacy.target_quantile,
            privacy.clip_learning_rate,
            expected,
            sampling,
            privacy.bit_noise_multiplier,
            privacy.noise_decay,
        )
    else:
        encoder = clip_l2(privacy.clip_norm)
        aggregator = gaussian_sum(sigma, privacy.clip_norm, expected, sampling, privacy.noise_decay)
    ledger = LedgerSettings(privacy.delta, privacy.budget, privacy.accountant)
    return ClientDpPlan(encoder, aggregator, sigma, rate, ledger, privacy)
