"""Differential privacy for a federated run, from its config: links, calibration, ledger, claim.

Two units of privacy (``privacy.level``):

- ``client`` (DP-FedAvg): neighbouring federations differ by one client's whole data set. Each
  round releases a noised mean of clipped updates: a Gaussian mechanism, Poisson-subsampled at
  the client sampling rate q (q = 1 when every client takes part). One subject: the data set.
- ``sample`` (DP-SGD inside every client): neighbouring data sets differ by one record. Each
  client noises its own local steps, so every update it sends is already DP; the privacy of a
  record of client c is the composition of c's own rounds, recorded under c's name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from veil.config import PrivacyConfig, RunConfig
from veil.errors import ConfigError
from veil.fl.aggregators import weighted_mean
from veil.fl.links import Link, identity
from veil.fl.local import LocalTraining, SampleLevelDP
from veil.fl.sampling import FixedCountSampler, FractionSampler
from veil.privacy.accounting import calibrate_noise_multiplier
from veil.privacy.client_dp import (
    adaptive_clipped_gaussian_sum,
    clip_l2,
    gaussian_sum,
    poisson_sampling,
)
from veil.privacy.ledger import LedgerSettings
from veil.runtime.dpsgd_local import client_sample_rates


@dataclass(frozen=True)
class DpPlan:
    """The DP pieces of a run: links, the local DP-SGD setting, and what the claim must say."""

    encoder: Link
    aggregator: Link
    local_dp: SampleLevelDP | None
    noise_multiplier: float
    sampling_rate: float
    ledger: LedgerSettings
    config: PrivacyConfig

    def claim(self, epsilon: float, rounds: int) -> str:
        """One sentence: who learns what, under which guarantee."""
        c = self.config
        accounting = f"{c.accountant.upper()} accounting"
        if self.local_dp is not None:
            return (
                f"Every training record is (ε = {epsilon:.3g}, δ = {c.delta:g})-differentially "
                f"private after {rounds} rounds (sample-level DP-SGD inside each client: "
                f"per-sample clip norm {c.clip_norm:g}, noise multiplier "
                f"{self.noise_multiplier:.3g}, Poisson batches, {accounting}; ε is the worst "
                "client's): each client adds the "
                "noise itself, so the server, the other clients and anyone who sees the models "
                "learn only DP updates (each client's record count is treated as public)."
            )
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
            f"multiplier {self.noise_multiplier:.3g}{decay} on the sum, {sampling}, {accounting}); "
            "the server still sees each sampled client's clipped update in the clear "
            "(no secure aggregation)."
        )


def client_sampling(config: RunConfig, num_clients: int) -> tuple[float, float]:
    """(sampling rate q, expected clients per round) for client-level accounting."""
    fed = config.federation
    if fed.poisson_rate is not None:
        return fed.poisson_rate, fed.poisson_rate * num_clients
    per_round = num_clients
    if fed.clients_per_round is not None:
        per_round = FixedCountSampler(fed.clients_per_round).expected_count(num_clients)
    elif fed.fraction is not None:
        per_round = FractionSampler(fed.fraction).expected_count(num_clients)
    if per_round < num_clients:
        raise ConfigError(
            "client-level DP accounts for Poisson client sampling: set federation.poisson_rate, or "
            f"let every client take part each round (got {per_round:g} of {num_clients} per round)"
        )
    return 1.0, float(num_clients)


def sample_level_noise(
    privacy: PrivacyConfig, local: LocalTraining, sizes: np.ndarray, rounds: int
) -> float:
    """σ for sample-level DP: given, or the smallest σ keeping every client's records within
    ``target_epsilon`` if it took part in all ``rounds`` (per distinct (q_c, steps_c))."""
    if privacy.noise_multiplier is not None:
        return privacy.noise_multiplier
    rates = client_sample_rates(sizes, local.batch_size)
    cases = {
        (float(q), int(local.num_steps(int(n))) * rounds) for q, n in zip(rates, sizes, strict=True)
    }
    return max(
        calibrate_noise_multiplier(
            privacy.target_epsilon, q, steps, privacy.delta, privacy.accountant
        )
        for q, steps in sorted(cases)
    )


def dp_plan(config: RunConfig, local: LocalTraining, sizes: np.ndarray) -> DpPlan:
    """Links, local DP-SGD and ledger settings for ``config.privacy`` (which must be set);
    ``sizes`` are the clients' training rows."""
    privacy = config.privacy
    ledger = LedgerSettings(privacy.delta, privacy.budget, privacy.accountant)
    if privacy.level == "sample":
        sigma = sample_level_noise(privacy, local, sizes, config.federation.rounds)
        local_dp = SampleLevelDP(sigma, privacy.clip_norm)
        return DpPlan(identity(), weighted_mean(), local_dp, sigma, 1.0, ledger, privacy)
    rate, expected = client_sampling(config, len(sizes))
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
    return DpPlan(encoder, aggregator, None, sigma, rate, ledger, privacy)
