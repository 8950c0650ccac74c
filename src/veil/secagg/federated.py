"""SecAgg+ for a federated run, from its config: settings, links and the claim's clause.

Without DP the server's aggregate is the plain mean of the survivors' clipped updates (FedAvg's
sample weights would reveal dataset sizes, so they are not applied). With client-level DP the
noise is distributed: each client adds a discrete Gaussian share so that the fewest survivors
the protocol accepts (``min_survivors``) together carry noise multiplier σ; the sum is divided
by the fixed number of clients, as in DP-FedAvg. With sample-level DP the clients' updates are
already private (DP-SGD) and SecAgg+ hides them from the server on top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from veil.claims import secure_sum_claim
from veil.config import RunConfig
from veil.errors import ConfigError
from veil.fl.links import Link
from veil.privacy.federated import DpPlan
from veil.secagg.distributed_dp import client_noise_std
from veil.secagg.encoding import choose_encoding
from veil.secagg.graph import default_neighbours, default_threshold
from veil.secagg.links import SecAggSettings, secagg_aggregator, secagg_encoder

MAX_CLIENT_STD = 1e6


@dataclass(frozen=True)
class SecurePlan:
    encoder: Link
    aggregator: Link
    settings: SecAggSettings

    def clause(self) -> str:
        s = self.settings
        keys = "X25519 + ML-KEM-768 hybrid keys" if s.hybrid else "X25519 keys"
        return (
            f"the server sees only the masked sum of at least {s.min_survivors} clients' "
            f"updates, never one client's update (SecAgg+: {s.neighbours} neighbours, threshold "
            f"{s.threshold}, Z_2^{s.encoding.bits}, {keys})"
        )

    def claim(
        self, config: RunConfig, dp: DpPlan | None, epsilon: float | None, rounds: int
    ) -> str:
        """One sentence: the secure-sum clause joined to the DP guarantee (if any)."""
        noise = (
            f"distributed discrete Gaussian: each client adds its share of noise multiplier "
            f"{dp.noise_multiplier:.3g}, counted for the {self.settings.min_survivors} "
            f"guaranteed survivors, clip norm {self.settings.encoding.clip_norm:g}"
            if dp is not None
            else ""
        )
        return secure_sum_claim(self.clause(), config, dp, epsilon, rounds, noise)


def secure_plan(config: RunConfig, num_clients: int, length: int, dp: DpPlan | None) -> SecurePlan:
    """Links for ``config.secure_aggregation`` over ``num_clients`` clients and ``length``
    model parameters; ``dp`` is the run's DP plan (or None)."""
    sa = config.secure_aggregation
    privacy = config.privacy
    distributed = privacy is not None and privacy.level == "client"
    if distributed:
        check_distributed_dp(config, "secure_aggregation")
    clip = quantization_clip(config, "secure_aggregation")
    k = sa.neighbors or default_neighbours(num_clients)
    if num_clients > 1 and k > num_clients - 1:
        raise ConfigError(
            f"secure_aggregation.neighbors must be ≤ {num_clients - 1} for "
            f"{num_clients} clients (got {k})"
        )
    t = sa.threshold or default_threshold(k)
    m = sa.min_survivors or t
    if 2 * t <= k:
        raise ConfigError(
            f"secure_aggregation.threshold must exceed neighbors / 2 = {k / 2:g} (got {t}): "
            "otherwise a server that lies about dropouts can collect both kinds of share"
        )
    if not (1 <= t <= k and t <= m <= num_clients):
        raise ConfigError(
            f"secure_aggregation needs 1 ≤ threshold ≤ neighbors = {k} and threshold ≤ "
            f"min_survivors ≤ clients = {num_clients} (got threshold {t}, min_survivors {m})"
        )
    sigma = dp.noise_multiplier if distributed else 0.0
    relative_noise = sigma * (num_clients / m) ** 0.5
    max_scale = math.inf
    if distributed:  # keep σ_c ≤ MAX_CLIENT_STD: the sampler's range, far above rounding error
        max_scale = (MAX_CLIENT_STD * math.sqrt(m) / sigma - math.sqrt(length)) / clip
    encoding = choose_encoding(sa.bits, clip, num_clients, length, relative_noise, max_scale)
    client_std = client_noise_std(sigma, encoding.sensitivity(length), m) if distributed else 0.0
    settings = SecAggSettings(
        k, t, m, encoding, sa.post_quantum, client_std, sa.simulated_dropout, sa.dropout_stage
    )
    denominator = float(num_clients) if distributed else None
    return SecurePlan(secagg_encoder(settings), secagg_aggregator(settings, denominator), settings)


def quantization_clip(config: RunConfig, section: str) -> float:
    """The L2 bound updates are clipped to before quantizing: ``section.clip_norm``, else
    ``privacy.clip_norm``; one of them must be set."""
    clip = getattr(config, section).clip_norm
    if clip is None and config.privacy is not None:
        clip = config.privacy.clip_norm
    if clip is None:
        raise ConfigError(
            f"{section}.clip_norm is needed to quantize updates (there is no "
            "privacy.clip_norm to reuse): set it to a bound on the updates' L2 norm"
        )
    return clip


def check_distributed_dp(config: RunConfig, section: str) -> None:
    """Refuse client-level DP settings that noise added by the clients (under ``section``:
    secure_aggregation or encryption) cannot honour."""
    privacy, fed = config.privacy, config.federation
    if privacy.adaptive_clipping or privacy.noise_decay != 1:
        raise ConfigError(
            f"with {section}, client-level DP supports a fixed clip norm and constant noise "
            "(no adaptive_clipping or noise_decay)"
        )
    if privacy.accountant != "rdp":
        raise ConfigError(
            f"distributed DP under {section} is accounted in zCDP: set privacy.accountant: rdp"
        )
    if fed.poisson_rate is not None and fed.poisson_rate < 1:
        raise ConfigError(
            f"distributed DP under {section} accounts without client subsampling: let every "
            "client take part (remove poisson_rate)"
        )
