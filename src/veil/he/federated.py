"""Encrypted aggregation for a federated run, from its config: keys, links, the claim's clause.

Without DP the result is the plain mean of the clients' clipped updates (FedAvg's sample weights
would reveal dataset sizes). With client-level DP (integer schemes only), each client adds a
discrete Gaussian share before encrypting, sized so that ``min_clients`` shares carry noise
multiplier σ (Kairouz et al. 2021, as under SecAgg+); the sum is divided by the fixed number of
clients. CKKS is refused with DP: its float noise is not floating-point safe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from veil.claims import secure_sum_claim
from veil.config import RunConfig
from veil.errors import ConfigError
from veil.fl.links import Link
from veil.he.aggregation import layout_for
from veil.he.links import HeSettings, he_aggregator, he_encoder
from veil.he.schemes import generate
from veil.privacy.federated import DpPlan
from veil.secagg.distributed_dp import client_noise_std
from veil.secagg.encoding import TAIL_STDS
from veil.secagg.federated import check_distributed_dp, quantization_clip

SCHEME_NAMES = {
    "bfv": "BFV, packed lanes, TenSEAL N = 4096, 128-bit",
    "ckks": "CKKS, TenSEAL N = 8192, 128-bit",
    "paillier": "Paillier, packed lanes",
}


@dataclass(frozen=True)
class EncryptedPlan:
    encoder: Link
    aggregator: Link
    settings: HeSettings
    scheme: str

    def clause(self) -> str:
        s = self.settings
        name = SCHEME_NAMES[self.scheme]
        if self.scheme == "paillier":
            name += f" ({s.public.public_key.n.bit_length()}-bit)"
        return (
            f"the aggregator sees only ciphertexts ({name}) and a separate key holder decrypts "
            f"only sums of at least {s.min_clients} clients' updates, assuming the two do not "
            "collude"
        )

    def claim(
        self, config: RunConfig, dp: DpPlan | None, epsilon: float | None, rounds: int
    ) -> str:
        """One sentence: the secure-sum clause joined to the DP guarantee (if any)."""
        noise = (
            f"each client adds a discrete Gaussian share of noise multiplier "
            f"{dp.noise_multiplier:.3g} before encrypting, counted for "
            f"{self.settings.min_clients} clients, clip norm {self.settings.clip_norm:g}"
            if dp is not None
            else ""
        )
        return secure_sum_claim(self.clause(), config, dp, epsilon, rounds, noise)


def encrypted_plan(
    config: RunConfig, num_clients: int, length: int, dp: DpPlan | None
) -> EncryptedPlan:
    """Keys (generated here: the simulated key holder) and links for ``config.encryption``."""
    enc, privacy = config.encryption, config.privacy
    distributed = privacy is not None and privacy.level == "client"
    if distributed:
        check_distributed_dp(config, "encryption")
        if enc.scheme == "ckks":
            raise ConfigError(
                "encryption.scheme ckks cannot carry DP noise safely (floats): "
                "use bfv or paillier with privacy"
            )
    clip = quantization_clip(config, "encryption")
    m = enc.min_clients or num_clients
    if m > num_clients:
        raise ConfigError(f"encryption.min_clients must be ≤ {num_clients} (got {m})")
    holder = generate(enc.scheme, enc.paillier_bits)
    public = holder.public()
    sigma = dp.noise_multiplier if distributed else 0.0
    std, sensitivity, noise_room = 0.0, 0.0, 0.0
    if distributed:
        # v = clip·scale and σ_c = σ(v + √d)/√m; v + 8σ_c fills the b-bit range.
        offset = 2 ** (enc.value_bits - 1) - 1
        ratio = TAIL_STDS * sigma / math.sqrt(m)
        noise_room = offset - (offset - ratio * math.sqrt(length)) / (1 + ratio)
    layout = layout_for(public, num_clients, clip, enc.value_bits, noise_room)
    if distributed:
        sensitivity = clip * layout.scale + math.sqrt(length)
        std = client_noise_std(sigma, sensitivity, m)
    settings = HeSettings(public, layout, clip, m, std, sensitivity)
    denominator = float(num_clients) if distributed else None
    return EncryptedPlan(
        he_encoder(settings),
        he_aggregator(settings, holder, denominator),
        settings,
        enc.scheme,
    )
